package dev.edgeconv.demo.core

/**
 * An 8-bit RGB image: [data] is row-major, interleaved R, G, B, each 0..255.
 */
class RgbImage(val width: Int, val height: Int, val data: IntArray) {
    init {
        require(data.size == width * height * 3) { "RgbImage: ${data.size} values for $width x $height x 3" }
    }

    fun crop(left: Int, top: Int, w: Int, h: Int): RgbImage {
        require(left >= 0 && top >= 0 && left + w <= width && top + h <= height) {
            "crop ($left, $top, $w x $h) outside a $width x $height image"
        }
        val out = IntArray(w * h * 3)
        for (y in 0 until h) {
            System.arraycopy(data, ((top + y) * width + left) * 3, out, y * w * 3, w * 3)
        }
        return RgbImage(w, h, out)
    }

    companion object {
        /** From Android-style ARGB pixels (Bitmap.getPixels); alpha is dropped, as PIL's convert("RGB"). */
        fun fromArgb(argb: IntArray, width: Int, height: Int): RgbImage {
            require(argb.size >= width * height) { "RgbImage: ${argb.size} pixels for $width x $height" }
            val d = IntArray(width * height * 3)
            for (i in 0 until width * height) {
                val p = argb[i]
                d[i * 3] = (p shr 16) and 0xFF
                d[i * 3 + 1] = (p shr 8) and 0xFF
                d[i * 3 + 2] = p and 0xFF
            }
            return RgbImage(width, height, d)
        }
    }
}

/**
 * Pillow's Image.resize for 8-bit RGB images (Pillow 13), ported operation by operation from Pillow's
 * src/libImaging/Resample.c (BILINEAR, BICUBIC: separable two-pass convolution, horizontal
 * first, the filter support widened by the downscale factor so that downscaling antialiases;
 * coefficients in double, normalised per output pixel, then fixed point with 22 fractional
 * bits; each pass rounds and clips to uint8) and Geometry.c (NEAREST: ImagingScaleAffine,
 * source position accumulated in double, truncated).
 *
 * Same IEEE double operations in the same order, same integer arithmetic: the output pixels
 * are bit-identical to Pillow's (checked on the shared test vectors). Only the default box
 * (the whole image) and reducing_gap=None are supported, as used by edgeconv's Preprocess.
 */
object PillowResize {
    const val NEAREST = "nearest"
    const val BILINEAR = "bilinear"
    const val BICUBIC = "bicubic"

    private const val PRECISION_BITS = 32 - 8 - 2

    private abstract class Filter(val support: Double) {
        abstract fun weight(x: Double): Double
    }

    private object Bilinear : Filter(1.0) {
        override fun weight(x: Double): Double {
            var v = x
            if (v < 0.0) v = -v
            if (v < 1.0) return 1.0 - v
            return 0.0
        }
    }

    private object Bicubic : Filter(2.0) {
        // a = -0.5; (a + 2.0) = 1.5 and (a + 3.0) = 2.5 exactly, as folded by the C compiler
        override fun weight(x: Double): Double {
            var v = x
            if (v < 0.0) v = -v
            if (v < 1.0) return (1.5 * v - 2.5) * v * v + 1
            if (v < 2.0) return (((v - 5) * v + 8) * v - 4) * -0.5
            return 0.0
        }
    }

    private class Coeffs(val ksize: Int, val bounds: IntArray, val kk: IntArray)

    /** precompute_coeffs + normalize_coeffs_8bpc, for the default box in0 = 0, in1 = inSize. */
    private fun coeffs(inSize: Int, outSize: Int, filter: Filter): Coeffs {
        val in0 = 0.0
        val in1 = inSize.toDouble()
        val scale = (in1 - in0) / outSize
        var filterscale = scale
        if (filterscale < 1.0) filterscale = 1.0
        val support = filter.support * filterscale
        val ksize = Math.ceil(support).toInt() * 2 + 1
        val kk = DoubleArray(outSize * ksize)
        val bounds = IntArray(outSize * 2)
        val invFilterscale = 1.0 / filterscale
        for (xx in 0 until outSize) {
            val center = in0 + (xx + 0.5) * scale
            var ww = 0.0
            var xmin = (center - support + 0.5).toInt()
            if (xmin < 0) xmin = 0
            var xmax = (center + support + 0.5).toInt()
            if (xmax > inSize) xmax = inSize
            xmax -= xmin
            val k0 = xx * ksize
            for (x in 0 until xmax) {
                val w = filter.weight((x + xmin - center + 0.5) * invFilterscale)
                kk[k0 + x] = w
                ww += w
            }
            if (ww != 0.0) {
                for (x in 0 until xmax) kk[k0 + x] /= ww
            }
            bounds[xx * 2] = xmin
            bounds[xx * 2 + 1] = xmax
        }
        val fixed = IntArray(kk.size)
        val one = (1 shl PRECISION_BITS).toDouble()
        for (i in kk.indices) {
            fixed[i] = if (kk[i] < 0) (-0.5 + kk[i] * one).toInt() else (0.5 + kk[i] * one).toInt()
        }
        return Coeffs(ksize, bounds, fixed)
    }

    private fun clip8(v: Int): Int {
        val s = v shr PRECISION_BITS
        return if (s < 0) 0 else if (s > 255) 255 else s
    }

    fun resize(img: RgbImage, outW: Int, outH: Int, interpolation: String): RgbImage {
        require(outW > 0 && outH > 0) { "resize to $outW x $outH" }
        if (outW == img.width && outH == img.height) return RgbImage(outW, outH, img.data.copyOf())
        return when (interpolation) {
            NEAREST -> nearest(img, outW, outH)
            BILINEAR -> resample(img, outW, outH, Bilinear)
            BICUBIC -> resample(img, outW, outH, Bicubic)
            else -> throw IllegalArgumentException("interpolation '$interpolation': must be bilinear, bicubic or nearest")
        }
    }

    /**
     * ImagingResampleInner (Pillow 13) with the 8bpc passes, 3 bands. Horizontal pass first,
     * on the source rows the vertical pass needs; but when the height shrinks by more than
     * twice as many pixels as the width, the vertical pass runs first (Pillow >= 13; Pillow
     * <= 12 always ran horizontal first, which gives up to 1 LSB different pixels there).
     */
    private fun resample(img: RgbImage, outW: Int, outH: Int, filter: Filter): RgbImage {
        val needHorizontal = outW != img.width
        val needVertical = outH != img.height
        val dh = img.height - outH
        val horizontalFirst = !(dh > 0 && dh > (img.width - outW) * 2)
        var src = img
        if (horizontalFirst) {
            if (needHorizontal) {
                val vert = coeffs(img.height, outH, filter)
                val first = vert.bounds[0]
                val last = vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1]
                src = horizontalPass(src, outW, first, last - first, coeffs(img.width, outW, filter))
                if (needVertical) {
                    for (i in 0 until outH) vert.bounds[i * 2] -= first
                    src = verticalPass(src, outH, vert)
                }
            } else if (needVertical) {
                src = verticalPass(src, outH, coeffs(img.height, outH, filter))
            }
        } else {
            if (needVertical) src = verticalPass(src, outH, coeffs(img.height, outH, filter))
            if (needHorizontal) src = horizontalPass(src, outW, 0, src.height, coeffs(img.width, outW, filter))
        }
        return src
    }

    /** ImagingResampleHorizontal_8bpc: [rows] output rows from source rows offset.. */
    private fun horizontalPass(img: RgbImage, outW: Int, offset: Int, rows: Int, hor: Coeffs): RgbImage {
        val out = IntArray(outW * rows * 3)
        val inData = img.data
        val inW = img.width
        val half = 1 shl (PRECISION_BITS - 1)
        for (yy in 0 until rows) {
            val rowBase = (yy + offset) * inW * 3
            for (xx in 0 until outW) {
                val xmin = hor.bounds[xx * 2]
                val xmax = hor.bounds[xx * 2 + 1]
                val k0 = xx * hor.ksize
                var ss0 = half
                var ss1 = half
                var ss2 = half
                for (x in 0 until xmax) {
                    val p = rowBase + (x + xmin) * 3
                    val k = hor.kk[k0 + x]
                    ss0 += inData[p] * k
                    ss1 += inData[p + 1] * k
                    ss2 += inData[p + 2] * k
                }
                val o = (yy * outW + xx) * 3
                out[o] = clip8(ss0)
                out[o + 1] = clip8(ss1)
                out[o + 2] = clip8(ss2)
            }
        }
        return RgbImage(outW, rows, out)
    }

    /** ImagingResampleVertical_8bpc (bounds already relative to img's first row). */
    private fun verticalPass(img: RgbImage, outH: Int, vert: Coeffs): RgbImage {
        val w = img.width
        val out = IntArray(w * outH * 3)
        val inData = img.data
        val half = 1 shl (PRECISION_BITS - 1)
        for (yy in 0 until outH) {
            val ymin = vert.bounds[yy * 2]
            val ymax = vert.bounds[yy * 2 + 1]
            val k0 = yy * vert.ksize
            for (xx in 0 until w) {
                var ss0 = half
                var ss1 = half
                var ss2 = half
                for (y in 0 until ymax) {
                    val p = ((y + ymin) * w + xx) * 3
                    val k = vert.kk[k0 + y]
                    ss0 += inData[p] * k
                    ss1 += inData[p + 1] * k
                    ss2 += inData[p + 2] * k
                }
                val o = (yy * w + xx) * 3
                out[o] = clip8(ss0)
                out[o + 1] = clip8(ss1)
                out[o + 2] = clip8(ss2)
            }
        }
        return RgbImage(w, outH, out)
    }

    /** ImagingScaleAffine (Pillow's NEAREST resize): positions accumulated in double. */
    private fun nearest(img: RgbImage, outW: Int, outH: Int): RgbImage {
        val a0 = img.width.toDouble() / outW
        val a4 = img.height.toDouble() / outH
        val xintab = IntArray(outW)
        val xvalid = BooleanArray(outW)
        var xo = 0.0 + a0 * 0.5
        for (x in 0 until outW) {
            val xin = if (xo < 0.0) -1 else xo.toInt()
            if (xin >= 0 && xin < img.width) {
                xintab[x] = xin
                xvalid[x] = true
            }
            xo += a0
        }
        val out = IntArray(outW * outH * 3)  // fill = 1: pixels mapped outside stay 0
        var yo = 0.0 + a4 * 0.5
        for (y in 0 until outH) {
            val yi = if (yo < 0.0) -1 else yo.toInt()
            if (yi >= 0 && yi < img.height) {
                for (x in 0 until outW) {
                    if (!xvalid[x]) continue
                    val s = (yi * img.width + xintab[x]) * 3
                    val o = (y * outW + x) * 3
                    out[o] = img.data[s]
                    out[o + 1] = img.data[s + 1]
                    out[o + 2] = img.data[s + 2]
                }
            }
            yo += a4
        }
        return RgbImage(outW, outH, out)
    }
}
