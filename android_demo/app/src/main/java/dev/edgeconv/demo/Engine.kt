package dev.edgeconv.demo

import dev.edgeconv.demo.core.ModelInput
import java.io.Closeable

/**
 * One inference runtime behind the UI. It takes the model input exactly as the core made it
 * from the manifest (layout, dtype, quantisation) and returns the output as float32
 * (dequantised with the manifest's output quant when the model's output is int8 / uint8).
 *
 * LiteRtEngine is the one implementation. A second one (ONNX Runtime Android, or ExecuTorch
 * with a .pte file) would implement this interface and be chosen from the manifest's file.
 */
interface Engine : Closeable {
    /** Shown in the UI, e.g. "LiteRT Interpreter, CPU, 4 threads". */
    val description: String

    /** Problems that do not stop the engine (shown to the user), e.g. manifest vs model. */
    val warnings: List<String>

    fun run(input: ModelInput): FloatArray
}
