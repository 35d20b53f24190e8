package dev.edgeconv.demo

import dev.edgeconv.demo.core.Json
import dev.edgeconv.demo.core.JsonNumber
import dev.edgeconv.demo.core.LatencyWindow
import dev.edgeconv.demo.core.ManifestException
import dev.edgeconv.demo.core.Manifests
import dev.edgeconv.demo.core.Postprocess
import dev.edgeconv.demo.core.Preprocessor
import dev.edgeconv.demo.core.RgbImage

/**
 * The checks of the core against the shared test vectors (src/test/resources/vectors, written
 * by `python -m edgeconv.android vectors` from the host's own preprocessing). Used by the
 * JUnit test (PreprocessTest) and by the plain-kotlinc runner (VectorCheck), so it keeps to
 * Kotlin 1.3 and the JDK only.
 *
 * Per case: the resized size, the uint8 crop (Pillow bit-exactness: every pixel equal), the
 * model input computed from our crop, and the model input computed from the host's crop
 * (steps 2-4 alone). All must be equal exactly: float32 values bit for bit, int8 / uint8
 * values equal.
 */
class VectorReport {
    val failures = ArrayList<String>()
    val passed = ArrayList<String>()
    var pixels = 0
    var pixelMismatches = 0
    var maxPixelDiff = 0
    var tensorValues = 0
    var tensorMismatches = 0

    fun check(name: String, problems: List<String>) {
        if (problems.isEmpty()) passed.add(name) else failures.add("$name: " + problems.joinToString("; "))
    }
}

object VectorSuite {
    fun runAll(read: (String) -> String): VectorReport {
        val r = VectorReport()
        val index = Json.parse(read("index.json")) as Map<*, *>
        for (f in index["files"] as List<*>) runImage(read(f as String), f, r)
        val checks = index["manifest_checks"] as? String
        if (checks != null) runManifestChecks(read(checks), r)
        runPostprocess(r)
        return r
    }

    private fun ints(v: Any?): IntArray {
        val l = v as List<*>
        return IntArray(l.size) { (l[it] as JsonNumber).toInt() }
    }

    private fun int(v: Any?): Int = (v as JsonNumber).toInt()

    fun runImage(text: String, file: String, r: VectorReport) {
        val doc = Json.parse(text) as Map<*, *>
        val img = RgbImage(int(doc["width"]), int(doc["height"]), ints(doc["rgb"]))
        for (c in doc["cases"] as List<*>) {
            val case = c as Map<*, *>
            val name = "$file:${case["name"]}"
            val problems = ArrayList<String>()
            try {
                val m = Manifests.fromJson(case["manifest"])
                val p = Preprocessor(m.preprocess, m.input)
                val size = p.resizedSize(img.width, img.height)
                val wantSize = ints(case["resized_size"])
                if (size[0] != wantSize[0] || size[1] != wantSize[1]) {
                    problems.add("resized size ${size[0]}x${size[1]}, host ${wantSize[0]}x${wantSize[1]}")
                }
                val crop = p.resizeAndCrop(img)
                val wantCrop = ints(case["crop_rgb"])
                var bad = 0
                for (i in wantCrop.indices) {
                    val d = Math.abs(crop.data[i] - wantCrop[i])
                    if (d != 0) bad++
                    if (d > r.maxPixelDiff) r.maxPixelDiff = d
                }
                r.pixels += wantCrop.size
                r.pixelMismatches += bad
                if (bad > 0) problems.add("$bad of ${wantCrop.size} uint8 crop values differ from Pillow's")

                val dtype = case["expected_dtype"] as String
                val expected = case["expected"] as List<*>
                val ours = p.toModelInput(p.normaliseNchw(crop))
                val fromHostCrop = p.toModelInput(p.normaliseNchw(RgbImage(crop.width, crop.height, wantCrop)))
                if (ours.spec.dtype != dtype) problems.add("dtype ${ours.spec.dtype}, expected $dtype")
                if (ours.size != expected.size) {
                    problems.add("${ours.size} values, expected ${expected.size}")
                } else {
                    val badOurs = mismatches(ours, expected, dtype)
                    val badSteps = mismatches(fromHostCrop, expected, dtype)
                    r.tensorValues += expected.size
                    r.tensorMismatches += badOurs
                    if (badOurs > 0) problems.add("$badOurs of ${expected.size} model-input values differ")
                    if (badSteps > 0) problems.add("normalise/layout/quantise on the host's crop: $badSteps values differ")
                }
            } catch (e: Exception) {
                problems.add("${e.javaClass.simpleName}: ${e.message}")
            }
            r.check(name, problems)
        }
    }

    private fun mismatches(x: dev.edgeconv.demo.core.ModelInput, expected: List<*>, dtype: String): Int {
        var bad = 0
        for (i in expected.indices) {
            val e = expected[i] as JsonNumber
            if (dtype == "float32") {
                if (java.lang.Float.floatToIntBits(x.floats!![i]) != java.lang.Float.floatToIntBits(e.toFloat())) bad++
            } else {
                if (x.intAt(i) != e.toInt()) bad++
            }
        }
        return bad
    }

    /** Python's check_manifest and the app's parser agree: accept / reject, and the keys named. */
    fun runManifestChecks(text: String, r: VectorReport) {
        for (c in Json.parse(text) as List<*>) {
            val case = c as Map<*, *>
            val name = "manifests.json:${case["name"]}"
            val ok = case["ok"] as Boolean
            val problems = ArrayList<String>()
            val ours = Manifests.problems(case["manifest"])
            if (ok && ours.isNotEmpty()) problems.add("rejected a manifest Python accepts: $ours")
            if (!ok && ours.isEmpty()) problems.add("accepted a manifest Python rejects: ${case["problems"]}")
            if (!ok) {
                for (p in case["problems"] as List<*>) {
                    val key = (p as String).substringBefore(" ")
                    if (ours.none { it.substringBefore(" ") == key }) problems.add("no problem names '$key' (ours: $ours)")
                }
                try {
                    Manifests.fromJson(case["manifest"])
                    problems.add("fromJson did not throw")
                } catch (e: ManifestException) {
                    // expected
                }
            }
            r.check(name, problems)
        }
    }

    fun runPostprocess(r: VectorReport) {
        val problems = ArrayList<String>()
        val top = Postprocess.topK(floatArrayOf(0.1f, 0.5f, 0.2f, 0.5f), listOf("a", "b", "c", "d"), 3)
        if (top.map { it.label } != listOf("b", "d", "c")) problems.add("topK order ${top.map { it.label }}")
        val sm = Postprocess.softmax(floatArrayOf(1f, 2f, 3f))
        if (Math.abs(sm.sum() - 1f) > 1e-6f || !(sm[2] > sm[1] && sm[1] > sm[0])) problems.add("softmax ${sm.toList()}")
        val dq = Postprocess.dequantize(byteArrayOf(-128, 0, 127), "int8", dev.edgeconv.demo.core.QuantParams(0.5, -1))
        if (dq.toList() != listOf(-63.5f, 0.5f, 64f)) problems.add("dequantize int8 ${dq.toList()}")
        val dqu = Postprocess.dequantize(byteArrayOf(-1, 0), "uint8", dev.edgeconv.demo.core.QuantParams(1.0, 128))
        if (dqu.toList() != listOf(127f, -128f)) problems.add("dequantize uint8 ${dqu.toList()}")
        val lw = LatencyWindow(30)
        for (i in 1..100) lw.add(i.toDouble())
        if (lw.median() != 85.5 || lw.count != 30) problems.add("latency median ${lw.median()} over ${lw.count}")
        r.check("postprocess", problems)
    }
}
