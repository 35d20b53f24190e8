package dev.edgeconv.demo.core

class Prediction(val index: Int, val label: String, val score: Float) {
    override fun toString(): String = "$label ${"%.3f".format(score)}"
}

object Postprocess {
    /** int8 / uint8 output -> float32: (q - zero_point) * scale, as the host's from_model_output. */
    fun dequantize(raw: ByteArray, dtype: String, quant: QuantParams?): FloatArray {
        val out = FloatArray(raw.size)
        val unsigned = dtype == "uint8"
        for (i in raw.indices) {
            val q = if (unsigned) raw[i].toInt() and 0xFF else raw[i].toInt()
            out[i] = if (quant == null) q.toFloat() else (q.toFloat() - quant.zeroPoint) * quant.scaleF
        }
        return out
    }

    /** True when [v] already is a probability distribution (all in [0, 1], sum ~ 1). */
    fun isDistribution(v: FloatArray): Boolean {
        var sum = 0.0
        for (x in v) {
            if (x < 0f || x > 1f) return false
            sum += x
        }
        return Math.abs(sum - 1.0) < 1e-3
    }

    fun softmax(logits: FloatArray): FloatArray {
        var max = Float.NEGATIVE_INFINITY
        for (x in logits) if (x > max) max = x
        val e = DoubleArray(logits.size)
        var sum = 0.0
        for (i in logits.indices) {
            e[i] = Math.exp((logits[i] - max).toDouble())
            sum += e[i]
        }
        return FloatArray(logits.size) { (e[it] / sum).toFloat() }
    }

    /** Scores to show: the output itself if it is a distribution, else softmax(logits). */
    fun scores(output: FloatArray): FloatArray = if (isDistribution(output)) output else softmax(output)

    /** The k best classes, best first; ties go to the lower index. */
    fun topK(scores: FloatArray, labels: List<String>, k: Int): List<Prediction> {
        val idx = scores.indices.sortedWith(Comparator { a, b ->
            val c = scores[b].compareTo(scores[a])
            if (c != 0) c else a.compareTo(b)
        })
        return idx.take(Math.min(k, scores.size)).map {
            Prediction(it, if (it < labels.size) labels[it] else "#$it", scores[it])
        }
    }
}

/** The median of the last [capacity] latencies (ms). */
class LatencyWindow(val capacity: Int = 30) {
    private val values = DoubleArray(capacity)
    private var next = 0
    var count = 0
        private set

    fun add(ms: Double) {
        values[next] = ms
        next = (next + 1) % capacity
        if (count < capacity) count++
    }

    fun median(): Double? {
        if (count == 0) return null
        val s = values.copyOf(count)
        s.sort()
        return if (count % 2 == 1) s[count / 2] else (s[count / 2 - 1] + s[count / 2]) / 2.0
    }

    fun clear() {
        next = 0
        count = 0
    }
}
