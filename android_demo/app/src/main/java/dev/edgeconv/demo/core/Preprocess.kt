package dev.edgeconv.demo.core

/**
 * The model input in the manifest's layout and dtype: [floats] for float32 inputs, [bytes]
 * for int8 / uint8 ones (uint8 values stored as their low 8 bits).
 */
class ModelInput(val spec: TensorSpec, val floats: FloatArray?, val bytes: ByteArray?) {
    /** int8 / uint8 element i as an Int (for tests and display). */
    fun intAt(i: Int): Int {
        val b = bytes!![i].toInt()
        return if (spec.dtype == "uint8") b and 0xFF else b
    }

    val size: Int get() = floats?.size ?: bytes!!.size
}

/**
 * The host's preprocessing (edgeconv/data.py Preprocess, then bench_device/agent.py
 * Session.to_model_input), step for step:
 *
 *  1. resize the shorter side to `resize`: s = resize / min(w, h), new size
 *     max(crop, round(w * s)) x max(crop, round(h * s)) (round half to even, as Python),
 *     with Pillow's filter (PillowResize: bit-exact uint8);
 *  2. center crop `crop` x `crop` at left = (w' - crop) / 2, top = (h' - crop) / 2;
 *  3. x = (pixel / 255 - mean[c]) / std[c] in float32, channels R, G, B;
 *  4. layout NCHW or NHWC; for int8 / uint8 inputs q = clamp(rint(x / scale) + zero_point)
 *     (float32 division, round half to even, as numpy).
 *
 * Everything comes from the manifest: nothing about layout, normalisation or quantisation
 * is hard-coded.
 */
class Preprocessor(val pre: PreprocessSpec, val input: TensorSpec) {
    init {
        require(input.layout == "NHWC" || input.layout == "NCHW") { "input layout ${input.layout}: must be NHWC or NCHW" }
        require(input.shape.size == 4) { "input shape must have 4 dimensions" }
        val hw = input.heightWidth()
        require(hw[0] == pre.crop && hw[1] == pre.crop) {
            "input ${hw[0]} x ${hw[1]} does not match preprocess.crop ${pre.crop}"
        }
    }

    /** [width, height] after step 1. */
    fun resizedSize(width: Int, height: Int): IntArray {
        val s = pre.resize.toDouble() / Math.min(width, height).toDouble()
        val nw = Math.max(pre.crop, Math.rint(width * s).toInt())
        val nh = Math.max(pre.crop, Math.rint(height * s).toInt())
        return intArrayOf(nw, nh)
    }

    /** Steps 1 and 2: the crop x crop uint8 RGB image the model sees. */
    fun resizeAndCrop(img: RgbImage): RgbImage {
        val size = resizedSize(img.width, img.height)
        val resized = PillowResize.resize(img, size[0], size[1], pre.interpolation)
        val left = (size[0] - pre.crop) / 2
        val top = (size[1] - pre.crop) / 2
        return resized.crop(left, top, pre.crop, pre.crop)
    }

    /** Step 3: float32 NCHW, as data.Preprocess.normalise. */
    fun normaliseNchw(img: RgbImage): FloatArray {
        val hw = img.width * img.height
        val out = FloatArray(3 * hw)
        for (i in 0 until hw) {
            for (c in 0 until 3) {
                out[c * hw + i] = (img.data[i * 3 + c].toFloat() / 255f - pre.mean[c]) / pre.std[c]
            }
        }
        return out
    }

    /** Step 4: from float32 NCHW to the model's layout and dtype. */
    fun toModelInput(nchw: FloatArray): ModelInput {
        val h = pre.crop
        val w = pre.crop
        val hw = h * w
        val x: FloatArray
        if (input.layout == "NHWC") {
            x = FloatArray(nchw.size)
            for (i in 0 until hw) for (c in 0 until 3) x[i * 3 + c] = nchw[c * hw + i]
        } else {
            x = nchw
        }
        val q = input.quant
        if (input.dtype == "float32") return ModelInput(input, x, null)
        val range = Manifests.dtypeRange(input.dtype)
            ?: throw IllegalArgumentException("input dtype ${input.dtype}: must be float32, int8 or uint8")
        requireNotNull(q) { "${input.dtype} input without quant parameters" }
        val scale = q.scaleF
        val bytes = ByteArray(x.size)
        for (i in x.indices) {
            var v = Math.rint((x[i] / scale).toDouble()) + q.zeroPoint
            if (v < range[0]) v = range[0].toDouble()
            if (v > range[1]) v = range[1].toDouble()
            bytes[i] = v.toInt().toByte()
        }
        return ModelInput(input, null, bytes)
    }

    /** All steps, from Android-style ARGB pixels (Bitmap.getPixels). */
    fun run(argb: IntArray, width: Int, height: Int): ModelInput =
        toModelInput(normaliseNchw(resizeAndCrop(RgbImage.fromArgb(argb, width, height))))

    fun run(img: RgbImage): ModelInput = toModelInput(normaliseNchw(resizeAndCrop(img)))
}
