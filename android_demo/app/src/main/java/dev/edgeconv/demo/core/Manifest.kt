package dev.edgeconv.demo.core

/**
 * The manifest contract (manifest.json, written by `edgeconv export`; see android_demo/README.md).
 * The app takes layout, normalisation and quantisation ONLY from here. The checks mirror
 * edgeconv/android.py check_manifest: a manifest that it accepts parses here, one that it
 * rejects throws ManifestException with the problems (tested on vectors/manifests.json).
 *
 * Numbers are read as the host reads them: JSON text -> double -> float32 where the host
 * uses float32 (mean, std, quantisation scale), so the arithmetic is the host's.
 */
class QuantParams(val scale: Double, val zeroPoint: Int) {
    /** The scale as the host divides by it: numpy turns the Python float into float32. */
    val scaleF: Float get() = scale.toFloat()
}

class TensorSpec(
    val name: String,
    val shape: IntArray,
    val layout: String?,
    val dtype: String,
    val quant: QuantParams?
) {
    val elementCount: Int get() = shape.fold(1) { a, b -> a * b }
    val bytesPerElement: Int get() = if (dtype == "float32") 4 else 1
    /** Input only: [height, width] from the shape and layout. */
    fun heightWidth(): IntArray = if (layout == "NHWC") intArrayOf(shape[1], shape[2]) else intArrayOf(shape[2], shape[3])
}

class PreprocessSpec(
    val resize: Int,
    val crop: Int,
    val mean: FloatArray,
    val std: FloatArray,
    val interpolation: String
)

class ModelManifest(
    val model: String,
    val labels: List<String>,
    val preprocess: PreprocessSpec,
    val modelFile: String,
    val precision: String?,
    val input: TensorSpec,
    val output: TensorSpec,
    val sampleFile: String?
) {
    val numClasses: Int get() = classesOf(output.shape)

    companion object {
        fun classesOf(shape: IntArray): Int =
            if (shape.size > 1) shape.copyOfRange(1, shape.size).fold(1) { a, b -> a * b } else shape[0]
    }
}

class ManifestException(val problems: List<String>) :
    RuntimeException("the manifest cannot be used:\n - " + problems.joinToString("\n - "))

object Manifests {
    val SCHEMA_VERSIONS = 1..2
    val LAYOUTS = listOf("NHWC", "NCHW")
    val DTYPES = listOf("float32", "int8", "uint8")
    val INTERPOLATIONS = listOf("bilinear", "bicubic", "nearest")
    val PREPROCESS_KEYS = listOf("resize", "crop", "mean", "std")
    const val CHANNELS = 3

    fun dtypeRange(dtype: String): IntArray? = when (dtype) {
        "int8" -> intArrayOf(-128, 127)
        "uint8" -> intArrayOf(0, 255)
        else -> null
    }

    /** Parse manifest.json text; throws ManifestException (or JsonException) with the problems. */
    fun parse(text: String): ModelManifest = fromJson(Json.parse(text))

    fun fromJson(root: Any?): ModelManifest {
        val problems = problems(root)
        if (problems.isNotEmpty()) throw ManifestException(problems)
        val m = root as Map<*, *>
        val pre = m["preprocess"] as Map<*, *>
        val name = chosenFile(m)!!
        val entry = (m["files"] as Map<*, *>)[name] as Map<*, *>
        val android = m["android"] as? Map<*, *>
        return ModelManifest(
            model = (m["model"] as? String) ?: "model",
            labels = (m["labels"] as List<*>).map { it as String },
            preprocess = PreprocessSpec(
                resize = int(pre["resize"])!!,
                crop = int(pre["crop"])!!,
                mean = floats(pre["mean"]),
                std = floats(pre["std"]),
                interpolation = (pre["interpolation"] as? String) ?: "bilinear"
            ),
            modelFile = name,
            precision = entry["precision"] as? String,
            input = tensor(entry["input"] as Map<*, *>),
            output = tensor(entry["output"] as Map<*, *>),
            sampleFile = android?.get("sample") as? String
        )
    }

    // --- checks ----------------------------------------------------------------------------

    fun problems(root: Any?): List<String> {
        val out = ArrayList<String>()
        if (root !is Map<*, *>) {
            out.add("the manifest must be a JSON object")
            return out
        }
        val sv = root["schema_version"]
        if (!(sv is JsonNumber && sv.isInteger() && sv.toInt() in SCHEMA_VERSIONS)) {
            out.add("schema_version is ${show(sv)}: the app reads schema_version " +
                SCHEMA_VERSIONS.joinToString(" or "))
        }
        val labels = root["labels"]
        val labelsOk = labels is List<*> && labels.isNotEmpty() && labels.all { it is String }
        if (!labelsOk) out.add("labels must be a non-empty list of strings, one per output class")

        var crop: Int? = null
        val pre = root["preprocess"]
        if (pre !is Map<*, *>) {
            out.add("preprocess must be an object with ${PREPROCESS_KEYS.joinToString(", ")} (and interpolation)")
        } else {
            val missing = PREPROCESS_KEYS.filter { !pre.containsKey(it) }
            if (missing.isNotEmpty()) {
                out.add("preprocess lacks ${missing.joinToString(", ")}: the app needs ${PREPROCESS_KEYS.joinToString(", ")}")
            }
            for (k in listOf("resize", "crop")) {
                if (pre.containsKey(k)) {
                    val v = int(pre[k])
                    if (v == null || v <= 0) out.add("preprocess.$k is ${show(pre[k])}: must be a positive integer")
                    else if (k == "crop") crop = v
                }
            }
            for (k in listOf("mean", "std")) {
                if (!pre.containsKey(k)) continue
                val v = pre[k]
                if (!(v is List<*> && v.size == CHANNELS && v.all { it is JsonNumber })) {
                    out.add("preprocess.$k is ${show(v)}: must be a list of $CHANNELS numbers (R, G, B)")
                } else if (k == "std" && v.any { (it as JsonNumber).toDouble() == 0.0 }) {
                    out.add("preprocess.std is ${show(v)}: no value may be 0")
                }
            }
            val interp = if (pre.containsKey("interpolation")) pre["interpolation"] else "bilinear"
            if (!oneOf(interp, INTERPOLATIONS)) {
                out.add("preprocess.interpolation is ${show(interp)}: must be one of ${INTERPOLATIONS.joinToString(", ")}")
            }
            if (pre.containsKey("channel_order") && pre["channel_order"] != "RGB") {
                out.add("preprocess.channel_order is ${show(pre["channel_order"])}: the app feeds RGB")
            }
            if (pre.containsKey("scale") && pre["scale"] != "pixel / 255") {
                out.add("preprocess.scale is ${show(pre["scale"])}: the app scales \"pixel / 255\"")
            }
        }

        val files = root["files"]
        if (files !is Map<*, *>) {
            out.add("files must be an object of file name -> entry, with a .tflite file")
            return out
        }
        val tflite = tfliteFiles(root)
        val android = root["android"]
        if (android != null && android !is Map<*, *>) {
            out.add("android must be an object such as {\"model_file\": \"model_int8.tflite\"}")
            return out
        }
        val named = (android as? Map<*, *>)?.get("model_file")
        if (tflite.isEmpty()) {
            out.add("files has no TFLite entry (files: ${files.keys.joinToString(", ")}): the app runs .tflite models only; export with --formats tflite")
            return out
        }
        if (named != null && !files.containsKey(named)) {
            out.add("android.model_file names ${show(named)}, which is not in files (TFLite files: ${tflite.joinToString(", ")})")
            return out
        }
        if (named != null && !oneOf(named, tflite)) {
            out.add("android.model_file names ${show(named)}, which is not a TFLite file (TFLite files: ${tflite.joinToString(", ")})")
            return out
        }
        val name = chosenFile(root)!!
        val entry = files[name] as Map<*, *>
        val where = "files[\"$name\"]"
        val inp = entry["input"]
        val outp = entry["output"]
        out.addAll(tensorProblems(inp, "$where.input", true))
        out.addAll(tensorProblems(outp, "$where.output", false))
        if (crop != null && inp is Map<*, *> && oneOf(inp["layout"], LAYOUTS)) {
            val s = intList(inp["shape"])
            if (s != null && s.size == 4) {
                val hw = if (inp["layout"] == "NHWC") listOf(s[1], s[2]) else listOf(s[2], s[3])
                if (hw[0] != crop || hw[1] != crop) {
                    out.add("$where.input.shape is $s (${inp["layout"]}): its H x W ${hw[0]} x ${hw[1]} must equal preprocess.crop x crop = $crop x $crop")
                }
            }
        }
        if (labelsOk && outp is Map<*, *>) {
            val s = intList(outp["shape"])
            if (s != null && s.isNotEmpty() && s.all { it > 0 }) {
                val classes = ManifestModelHelpers.classes(s)
                if (classes != (labels as List<*>).size) {
                    out.add("labels has ${labels.size} entries but $where.output.shape $s gives $classes classes: one label per class")
                }
            }
        }
        return out
    }

    private fun tensorProblems(t: Any?, where: String, isInput: Boolean): List<String> {
        val out = ArrayList<String>()
        if (t !is Map<*, *>) {
            out.add("$where is missing: the app needs the ${if (isInput) "input" else "output"} tensor's shape, dtype and quant")
            return out
        }
        var shape = intList(t["shape"])
        if (shape == null || shape.isEmpty() || shape.any { it <= 0 }) {
            out.add("$where.shape is ${show(t["shape"])}: must be a list of positive integers")
            shape = null
        }
        val dtype = t["dtype"]
        if (!oneOf(dtype, DTYPES)) {
            out.add("$where.dtype is ${show(dtype)}: the app feeds and reads ${DTYPES.joinToString(", ")}")
        } else if (dtype == "float32") {
            if (t["quant"] != null) out.add("$where.quant is set for a float32 tensor: must be null")
        } else {
            val range = dtypeRange(dtype as String)!!
            val q = t["quant"]
            if (q !is Map<*, *>) {
                out.add("$where.quant is ${show(q)}: $dtype tensors need {\"scale\": <number > 0>, \"zero_point\": <integer in [${range[0]}, ${range[1]}]>}")
            } else {
                val scale = q["scale"]
                if (!(scale is JsonNumber && scale.toDouble() > 0 && !scale.toDouble().isInfinite())) {
                    out.add("$where.quant.scale is ${show(scale)}: must be a finite number > 0")
                }
                val zp = int(q["zero_point"])
                if (zp == null || zp < range[0] || zp > range[1]) {
                    out.add("$where.quant.zero_point is ${show(q["zero_point"])}: must be an integer in [${range[0]}, ${range[1]}] for $dtype")
                }
            }
        }
        if (isInput) {
            val layout = t["layout"]
            if (!oneOf(layout, LAYOUTS)) out.add("$where.layout is ${show(layout)}: must be NHWC or NCHW")
            if (shape != null) {
                if (shape.size != 4 || shape[0] != 1) {
                    out.add("$where.shape is $shape: the app feeds one image, [1, H, W, 3] (NHWC) or [1, 3, H, W] (NCHW)")
                } else if (oneOf(layout, LAYOUTS)) {
                    val c = if (layout == "NHWC") shape[3] else shape[1]
                    if (c != CHANNELS) out.add("$where.shape is $shape with layout $layout: $c channel(s); the app feeds RGB, 3 channels")
                }
            }
        }
        return out
    }

    // --- helpers ---------------------------------------------------------------------------

    fun tfliteFiles(m: Map<*, *>): List<String> {
        val files = m["files"] as? Map<*, *> ?: return emptyList()
        val out = ArrayList<String>()
        for ((k, v) in files) {
            if (k is String && v is Map<*, *> && (v["format"] == "tflite" || k.endsWith(".tflite"))) out.add(k)
        }
        return out
    }

    /** android.model_file, else the int8 .tflite, else the fp32 one, else the first .tflite. */
    fun chosenFile(m: Map<*, *>): String? {
        val named = (m["android"] as? Map<*, *>)?.get("model_file") as? String
        if (named != null) return named
        val names = tfliteFiles(m)
        val files = m["files"] as Map<*, *>
        for (p in listOf("int8", "fp32")) {
            for (n in names) if ((files[n] as Map<*, *>)["precision"] == p) return n
        }
        return names.firstOrNull()
    }

    private fun tensor(t: Map<*, *>): TensorSpec {
        val q = t["quant"] as? Map<*, *>
        return TensorSpec(
            name = (t["name"] as? String) ?: "",
            shape = intList(t["shape"])!!.toIntArray(),
            layout = t["layout"] as? String,
            dtype = t["dtype"] as String,
            quant = if (q == null) null else QuantParams((q["scale"] as JsonNumber).toDouble(), int(q["zero_point"])!!)
        )
    }

    /** Host reading of mean/std: JSON -> double (Python float) -> float32 (np.asarray(.., float32)). */
    private fun floats(v: Any?): FloatArray {
        val l = v as List<*>
        return FloatArray(l.size) { (l[it] as JsonNumber).toDouble().toFloat() }
    }

    private fun int(v: Any?): Int? =
        if (v is JsonNumber && v.isInteger() && Math.abs(v.toDouble()) < 2.0e9) v.toInt() else null

    private fun intList(v: Any?): List<Int>? {
        if (v !is List<*>) return null
        val out = ArrayList<Int>()
        for (x in v) out.add(int(x) ?: return null)
        return out
    }

    private fun oneOf(v: Any?, options: List<String>): Boolean = v is String && options.contains(v)

    private fun show(v: Any?): String = when (v) {
        null -> "null"
        is String -> "\"$v\""
        is List<*> -> v.joinToString(", ", "[", "]") { show(it) }
        is Map<*, *> -> "{...}"
        else -> v.toString()
    }
}

private object ManifestModelHelpers {
    fun classes(shape: List<Int>): Int = ModelManifest.classesOf(shape.toIntArray())
}
