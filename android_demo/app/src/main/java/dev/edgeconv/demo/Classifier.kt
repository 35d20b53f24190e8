package dev.edgeconv.demo

import android.graphics.Bitmap
import android.os.SystemClock
import dev.edgeconv.demo.core.LatencyWindow
import dev.edgeconv.demo.core.ModelManifest
import dev.edgeconv.demo.core.Postprocess
import dev.edgeconv.demo.core.Prediction
import dev.edgeconv.demo.core.Preprocessor
import dev.edgeconv.demo.core.RgbImage
import java.io.Closeable

/**
 * Bitmap -> ARGB IntArray (the only Android step) -> the core's preprocessing (from the
 * manifest) -> the engine -> top-5. Latency is the engine's run alone; the median is over
 * the last 30 inferences. Not thread-safe: MainActivity calls it from one worker thread.
 */
class Classifier(val manifest: ModelManifest, val engine: Engine) : Closeable {
    private val preprocessor = Preprocessor(manifest.preprocess, manifest.input)
    private val latency = LatencyWindow(30)

    class Result(
        val top: List<Prediction>,
        val inferenceMs: Double,
        val preprocessMs: Double,
        val medianMs: Double,
        val window: Int,
        /** The crop x crop image the model saw (after resize and crop, before normalising). */
        val modelInput: RgbImage
    )

    fun classify(bitmap: Bitmap): Result {
        val w = bitmap.width
        val h = bitmap.height
        val pixels = IntArray(w * h)
        bitmap.getPixels(pixels, 0, w, 0, 0, w, h)
        val t0 = SystemClock.elapsedRealtimeNanos()
        val crop = preprocessor.resizeAndCrop(RgbImage.fromArgb(pixels, w, h))
        val input = preprocessor.toModelInput(preprocessor.normaliseNchw(crop))
        val t1 = SystemClock.elapsedRealtimeNanos()
        val output = engine.run(input)
        val t2 = SystemClock.elapsedRealtimeNanos()
        val ms = (t2 - t1) / 1e6
        latency.add(ms)
        val top = Postprocess.topK(Postprocess.scores(output), manifest.labels, 5)
        return Result(top, ms, (t1 - t0) / 1e6, latency.median() ?: ms, latency.count, crop)
    }

    /** Start a new latency window (when switching between the sample and the camera). */
    fun resetLatency() = latency.clear()

    override fun close() = engine.close()

    companion object {
        fun toBitmap(img: RgbImage): Bitmap {
            val argb = IntArray(img.width * img.height) { i ->
                (0xFF shl 24) or (img.data[i * 3] shl 16) or (img.data[i * 3 + 1] shl 8) or img.data[i * 3 + 2]
            }
            return Bitmap.createBitmap(argb, img.width, img.height, Bitmap.Config.ARGB_8888)
        }
    }
}
