package dev.edgeconv.demo

import dev.edgeconv.demo.core.ModelInput
import dev.edgeconv.demo.core.ModelManifest
import dev.edgeconv.demo.core.Postprocess
import dev.edgeconv.demo.core.TensorSpec
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.Tensor
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * The .tflite model through LiteRT's Interpreter API (com.google.ai.edge.litert:litert).
 * Shapes and dtypes are checked against the manifest when the model loads, so a stale
 * manifest fails with a clear message instead of wrong answers.
 */
class LiteRtEngine(model: ByteBuffer, private val manifest: ModelManifest, threads: Int = 4) : Engine {
    private val interpreter = Interpreter(model, Interpreter.Options().setNumThreads(threads))
    private val inputBuffer: ByteBuffer
    private val outputBuffer: ByteBuffer
    private val warningList = ArrayList<String>()

    override val description = "LiteRT Interpreter, CPU, $threads threads"
    override val warnings: List<String> get() = warningList

    init {
        try {
            check("input", interpreter.getInputTensor(0), manifest.input)
            check("output", interpreter.getOutputTensor(0), manifest.output)
        } catch (e: RuntimeException) {
            interpreter.close()
            throw e
        }
        inputBuffer = ByteBuffer.allocateDirect(manifest.input.elementCount * manifest.input.bytesPerElement)
            .order(ByteOrder.nativeOrder())
        outputBuffer = ByteBuffer.allocateDirect(manifest.output.elementCount * manifest.output.bytesPerElement)
            .order(ByteOrder.nativeOrder())
    }

    private fun check(what: String, tensor: Tensor, spec: TensorSpec) {
        val file = manifest.modelFile
        val shape = tensor.shape()
        if (!shape.contentEquals(spec.shape)) {
            throw IllegalStateException("$file: the model's $what shape ${shape.contentToString()} is not the " +
                "manifest's ${spec.shape.contentToString()} (a stale manifest? export and install again)")
        }
        val want = when (spec.dtype) {
            "float32" -> DataType.FLOAT32
            "int8" -> DataType.INT8
            "uint8" -> DataType.UINT8
            else -> null
        }
        if (tensor.dataType() != want) {
            throw IllegalStateException("$file: the model's $what is ${tensor.dataType()}, the manifest says ${spec.dtype}")
        }
        val q = spec.quant ?: return
        val tq = tensor.quantizationParams()
        if (Math.abs(tq.scale - q.scaleF) > 1e-6f * q.scaleF || tq.zeroPoint != q.zeroPoint) {
            warningList.add("$what quantisation: the model has scale ${tq.scale}, zero point ${tq.zeroPoint}; " +
                "the manifest (used) has ${q.scale}, ${q.zeroPoint}")
        }
    }

    override fun run(input: ModelInput): FloatArray {
        inputBuffer.clear()
        val floats = input.floats
        if (floats != null) inputBuffer.asFloatBuffer().put(floats) else inputBuffer.put(input.bytes!!)
        inputBuffer.rewind()
        outputBuffer.clear()
        interpreter.run(inputBuffer, outputBuffer)
        outputBuffer.rewind()
        val out = manifest.output
        if (out.dtype == "float32") {
            val values = FloatArray(out.elementCount)
            outputBuffer.asFloatBuffer().get(values)
            return values
        }
        val raw = ByteArray(out.elementCount)
        outputBuffer.get(raw)
        return Postprocess.dequantize(raw, out.dtype, out.quant)
    }

    override fun close() = interpreter.close()
}
