package dev.edgeconv.demo.core

/**
 * A small JSON reader for the manifest and the test vectors, so that the core needs no
 * Android (org.json is a stub in JVM unit tests) and compiles with plain kotlinc.
 *
 * Values: Map<String, Any?> (insertion-ordered), List<Any?>, String, JsonNumber, Boolean, null.
 * A JsonNumber keeps its text, so toFloat() parses it straight to the nearest float (no
 * rounding through double) and test vectors written as shortest float32 text read back exactly.
 * Kept to Kotlin 1.3 syntax (the Debian kotlinc that runs the core on the test vectors).
 */
class JsonException(message: String) : RuntimeException(message)

class JsonNumber(val text: String) {
    fun toDouble(): Double = text.toDouble()
    fun toFloat(): Float = text.toFloat()
    fun isInteger(): Boolean {
        val d = toDouble()
        return d == Math.floor(d) && Math.abs(d) < 9.0e15
    }
    fun toLong(): Long {
        if (!isInteger()) throw JsonException("JSON: $text is not an integer")
        return toDouble().toLong()
    }
    fun toInt(): Int {
        val v = toLong()
        if (v < Int.MIN_VALUE || v > Int.MAX_VALUE) throw JsonException("JSON: $text is out of the Int range")
        return v.toInt()
    }
    override fun toString(): String = text
    override fun equals(other: Any?): Boolean = other is JsonNumber && other.toDouble() == toDouble()
    override fun hashCode(): Int = toDouble().hashCode()
}

object Json {
    fun parse(text: String): Any? {
        val p = Parser(text)
        p.skipWs()
        val v = p.value()
        p.skipWs()
        if (p.pos != text.length) throw p.error("trailing characters")
        return v
    }

    private class Parser(val s: String) {
        var pos = 0

        fun error(what: String): JsonException {
            val line = s.substring(0, Math.min(pos, s.length)).count { it == '\n' } + 1
            return JsonException("JSON: $what at offset $pos (line $line)")
        }

        fun skipWs() {
            while (pos < s.length && (s[pos] == ' ' || s[pos] == '\n' || s[pos] == '\r' || s[pos] == '\t')) pos++
        }

        fun value(): Any? {
            if (pos >= s.length) throw error("unexpected end")
            val c = s[pos]
            return when {
                c == '{' -> obj()
                c == '[' -> arr()
                c == '"' -> str()
                c == 't' -> word("true", true)
                c == 'f' -> word("false", false)
                c == 'n' -> word("null", null)
                c == '-' || (c in '0'..'9') -> num()
                else -> throw error("unexpected character '$c'")
            }
        }

        fun word(w: String, v: Any?): Any? {
            if (!s.startsWith(w, pos)) throw error("expected $w")
            pos += w.length
            return v
        }

        fun obj(): Map<String, Any?> {
            val m = LinkedHashMap<String, Any?>()
            pos++
            skipWs()
            if (pos < s.length && s[pos] == '}') { pos++; return m }
            while (true) {
                skipWs()
                if (pos >= s.length || s[pos] != '"') throw error("expected a key")
                val k = str()
                skipWs()
                if (pos >= s.length || s[pos] != ':') throw error("expected ':'")
                pos++
                skipWs()
                m[k] = value()
                skipWs()
                if (pos >= s.length) throw error("unterminated object")
                if (s[pos] == ',') { pos++; continue }
                if (s[pos] == '}') { pos++; return m }
                throw error("expected ',' or '}'")
            }
        }

        fun arr(): List<Any?> {
            val a = ArrayList<Any?>()
            pos++
            skipWs()
            if (pos < s.length && s[pos] == ']') { pos++; return a }
            while (true) {
                skipWs()
                a.add(value())
                skipWs()
                if (pos >= s.length) throw error("unterminated array")
                if (s[pos] == ',') { pos++; continue }
                if (s[pos] == ']') { pos++; return a }
                throw error("expected ',' or ']'")
            }
        }

        fun str(): String {
            val sb = StringBuilder()
            pos++
            while (true) {
                if (pos >= s.length) throw error("unterminated string")
                val c = s[pos++]
                if (c == '"') return sb.toString()
                if (c != '\\') { sb.append(c); continue }
                if (pos >= s.length) throw error("unterminated escape")
                val e = s[pos++]
                when (e) {
                    '"' -> sb.append('"')
                    '\\' -> sb.append('\\')
                    '/' -> sb.append('/')
                    'b' -> sb.append('\b')
                    'f' -> sb.append('\u000C')
                    'n' -> sb.append('\n')
                    'r' -> sb.append('\r')
                    't' -> sb.append('\t')
                    'u' -> {
                        if (pos + 4 > s.length) throw error("bad \\u escape")
                        sb.append(Integer.parseInt(s.substring(pos, pos + 4), 16).toChar())
                        pos += 4
                    }
                    else -> throw error("bad escape '\\$e'")
                }
            }
        }

        fun num(): JsonNumber {
            val start = pos
            if (s[pos] == '-') pos++
            while (pos < s.length && (s[pos] in '0'..'9' || s[pos] == '.' || s[pos] == 'e' ||
                        s[pos] == 'E' || s[pos] == '+' || s[pos] == '-')) pos++
            val t = s.substring(start, pos)
            try {
                t.toDouble()
                return JsonNumber(t)
            } catch (e: NumberFormatException) {
                throw error("bad number '$t'")
            }
        }
    }
}
