package dev.edgeconv.demo

import android.Manifest
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.graphics.Matrix
import android.graphics.drawable.BitmapDrawable
import android.os.Bundle
import android.util.Size
import android.view.View
import android.widget.Button
import android.widget.ImageView
import android.widget.TextView
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.core.resolutionselector.ResolutionSelector
import androidx.camera.core.resolutionselector.ResolutionStrategy
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import dev.edgeconv.demo.core.JsonException
import dev.edgeconv.demo.core.ManifestException
import dev.edgeconv.demo.core.Manifests
import dev.edgeconv.demo.core.ModelManifest
import java.util.Locale
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * One screen: the model and its preprocessing (from the manifest), a sample / camera switch,
 * the image (or camera preview) with the model's actual input in the corner, the top-5
 * labels with scores and the inference latency (median over the last 30 frames).
 *
 * All model work runs on one worker thread (the Interpreter is not thread-safe); CameraX
 * delivers frames to the same thread and drops frames while it is busy.
 */
class MainActivity : AppCompatActivity() {
    private lateinit var modelInfo: TextView
    private lateinit var results: TextView
    private lateinit var status: TextView
    private lateinit var sampleView: ImageView
    private lateinit var inputView: ImageView
    private lateinit var previewView: PreviewView
    private lateinit var sampleButton: Button
    private lateinit var cameraButton: Button

    private val worker: ExecutorService = Executors.newSingleThreadExecutor()
    private var classifier: Classifier? = null
    private var sample: Bitmap? = null
    private var cameraProvider: ProcessCameraProvider? = null
    @Volatile private var cameraOn = false

    private val cameraPermission =
        registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
            if (granted) startCamera() else status.setText(R.string.camera_denied)
        }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        modelInfo = findViewById(R.id.model_info)
        results = findViewById(R.id.results)
        status = findViewById(R.id.status)
        sampleView = findViewById(R.id.sample_view)
        inputView = findViewById(R.id.input_view)
        previewView = findViewById(R.id.preview_view)
        sampleButton = findViewById(R.id.button_sample)
        cameraButton = findViewById(R.id.button_camera)
        sampleButton.setOnClickListener { showSample() }
        cameraButton.setOnClickListener {
            if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
                startCamera()
            } else {
                cameraPermission.launch(Manifest.permission.CAMERA)
            }
        }
        worker.execute { load() }
    }

    /** Worker thread: manifest -> model -> engine; every failure becomes a message. */
    private fun load() {
        val text = ModelAssets.manifestText(this)
        if (text == null) {
            runOnUiThread { modelInfo.setText(R.string.no_model) }
            return
        }
        val manifest = try {
            Manifests.parse(text)
        } catch (e: ManifestException) {
            runOnUiThread {
                modelInfo.text = "assets/edgeconv/manifest.json cannot be used:\n - " + e.problems.joinToString("\n - ")
            }
            return
        } catch (e: JsonException) {
            runOnUiThread { modelInfo.text = "assets/edgeconv/manifest.json is not valid JSON: ${e.message}" }
            return
        }
        val engine = try {
            LiteRtEngine(ModelAssets.model(this, manifest.modelFile), manifest)
        } catch (e: java.io.IOException) {
            runOnUiThread {
                modelInfo.text = "The manifest names ${manifest.modelFile}, which is not in assets/edgeconv/: install the model again."
            }
            return
        } catch (e: Exception) {
            runOnUiThread { modelInfo.text = "LiteRT cannot run ${manifest.modelFile}: ${e.message}" }
            return
        }
        val c = Classifier(manifest, engine)
        classifier = c
        val bmp = ModelAssets.sample(this, manifest.sampleFile ?: "sample.png")
        sample = bmp
        runOnUiThread {
            modelInfo.text = describe(manifest, engine)
            if (engine.warnings.isNotEmpty()) status.text = engine.warnings.joinToString("\n")
            cameraButton.isEnabled = true
            sampleButton.isEnabled = bmp != null
            if (bmp == null) {
                status.setText(R.string.no_sample)
            } else {
                showSample()
            }
        }
    }

    private fun describe(m: ModelManifest, engine: Engine): String {
        val p = m.preprocess
        val q = m.input.quant
        val quant = if (q == null) "" else " (scale ${q.scale}, zero point ${q.zeroPoint})"
        return "${m.model}: ${m.modelFile}, ${m.numClasses} classes\n" +
            "input ${m.input.shape.joinToString("x")} ${m.input.layout} ${m.input.dtype}$quant\n" +
            "resize ${p.resize} ${p.interpolation}, crop ${p.crop}, " +
            "mean ${p.mean.joinToString(",")} std ${p.std.joinToString(",")}\n" +
            engine.description
    }

    private fun showSample() {
        val bmp = sample ?: return
        stopCamera()
        previewView.visibility = View.GONE
        sampleView.visibility = View.VISIBLE
        sampleView.setImageDrawable(BitmapDrawable(resources, bmp).apply { isFilterBitmap = false })
        worker.execute {
            val c = classifier ?: return@execute
            c.resetLatency()
            // a few runs so that the median means something for the still image too
            var result: Classifier.Result? = null
            for (i in 0 until 10) result = c.classify(bmp)
            val r = result!!
            runOnUiThread { show(r, "sample.png") }
        }
    }

    private fun startCamera() {
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener(Runnable {
            try {
                val provider = future.get()
                cameraProvider = provider
                val preview = Preview.Builder().build().also { it.setSurfaceProvider(previewView.surfaceProvider) }
                val selector = ResolutionSelector.Builder()
                    .setResolutionStrategy(
                        ResolutionStrategy(Size(640, 480), ResolutionStrategy.FALLBACK_RULE_CLOSEST_HIGHER_THEN_LOWER)
                    )
                    .build()
                val analysis = ImageAnalysis.Builder()
                    .setResolutionSelector(selector)
                    .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                    .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                    .build()
                analysis.setAnalyzer(worker, ImageAnalysis.Analyzer { image -> analyze(image) })
                provider.unbindAll()
                provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, analysis)
                sampleView.visibility = View.GONE
                previewView.visibility = View.VISIBLE
                results.setText(R.string.waiting_frames)
                worker.execute { classifier?.resetLatency() }
                cameraOn = true
            } catch (e: Exception) {
                status.text = getString(R.string.camera_failed, e.message ?: e.javaClass.simpleName)
            }
        }, ContextCompat.getMainExecutor(this))
    }

    private fun stopCamera() {
        cameraOn = false
        cameraProvider?.unbindAll()
    }

    /** Worker thread: one camera frame, upright, through the same classifier. */
    private fun analyze(image: ImageProxy) {
        try {
            val c = classifier ?: return
            if (!cameraOn) return
            val frame = upright(image.toBitmap(), image.imageInfo.rotationDegrees)
            val r = c.classify(frame)
            runOnUiThread { if (cameraOn) show(r, "camera ${frame.width}x${frame.height}") }
        } catch (e: Exception) {
            runOnUiThread { status.text = "camera frame: ${e.message}" }
        } finally {
            image.close()
        }
    }

    private fun upright(bitmap: Bitmap, degrees: Int): Bitmap {
        if (degrees == 0) return bitmap
        val m = Matrix().apply { postRotate(degrees.toFloat()) }
        return Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, m, false)
    }

    private fun show(r: Classifier.Result, source: String) {
        val lines = StringBuilder()
        lines.append(source).append('\n')
        r.top.forEachIndexed { i, p ->
            lines.append(String.format(Locale.US, "%d. %-22s %6.3f\n", i + 1, p.label.take(22), p.score))
        }
        lines.append(String.format(Locale.US, "inference %.2f ms, median %.2f ms (last %d)\npreprocess %.2f ms",
            r.inferenceMs, r.medianMs, r.window, r.preprocessMs))
        results.text = lines.toString()
        inputView.setImageDrawable(BitmapDrawable(resources, Classifier.toBitmap(r.modelInput)).apply { isFilterBitmap = false })
    }

    override fun onDestroy() {
        stopCamera()
        worker.execute { classifier?.close() }
        worker.shutdown()
        super.onDestroy()
    }
}
