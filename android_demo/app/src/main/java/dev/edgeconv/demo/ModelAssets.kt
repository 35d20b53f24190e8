package dev.edgeconv.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import java.io.FileInputStream
import java.io.FileNotFoundException
import java.io.IOException
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel

/**
 * What `edgeconv export ... --android android_demo` (edgeconv.android.install) puts into
 * app/src/main/assets/edgeconv/: manifest.json, the .tflite file it names and sample.png.
 */
object ModelAssets {
    const val DIR = "edgeconv"

    /** manifest.json's text, or null when the exporter has not installed a model. */
    fun manifestText(context: Context): String? = try {
        context.assets.open("$DIR/manifest.json").use { String(it.readBytes(), Charsets.UTF_8) }
    } catch (e: FileNotFoundException) {
        null
    }

    /** The model, memory-mapped (the build keeps .tflite uncompressed), else read into memory. */
    @Throws(IOException::class)
    fun model(context: Context, file: String): ByteBuffer {
        val path = "$DIR/$file"
        try {
            context.assets.openFd(path).use { fd ->
                FileInputStream(fd.fileDescriptor).use { stream ->
                    return stream.channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
                }
            }
        } catch (e: FileNotFoundException) {
            // compressed in the APK (openFd refuses those) or absent: try a plain read
        }
        val bytes = context.assets.open(path).use { it.readBytes() }
        return ByteBuffer.allocateDirect(bytes.size).order(ByteOrder.nativeOrder()).put(bytes).also { it.rewind() }
    }

    /** The sample image as ARGB_8888 at its own size (no density scaling), or null if absent. */
    fun sample(context: Context, file: String): Bitmap? = try {
        context.assets.open("$DIR/$file").use { stream ->
            val options = BitmapFactory.Options().apply {
                inPreferredConfig = Bitmap.Config.ARGB_8888
                inScaled = false
            }
            BitmapFactory.decodeStream(stream, null, options)
        }
    } catch (e: IOException) {
        null
    }
}
