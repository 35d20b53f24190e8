package dev.edgeconv.demo

import java.io.File

/**
 * The vector checks without JUnit or Gradle, for a plain kotlinc (Debian's `kotlin`, 1.3):
 *
 *   cd android_demo
 *   kotlinc $(find app/src/main/java/dev/edgeconv/demo/core -name '*.kt') \
 *       app/src/test/java/dev/edgeconv/demo/VectorSuite.kt \
 *       app/src/test/java/dev/edgeconv/demo/VectorCheck.kt -include-runtime -d /tmp/vectorcheck.jar
 *   java -cp /tmp/vectorcheck.jar dev.edgeconv.demo.VectorCheckKt app/src/test/resources/vectors
 *
 * Prints one line per check, then "N passed, M failed"; exits 1 if any failed.
 */
fun main(args: Array<String>) {
    val dir = File(if (args.isNotEmpty()) args[0] else "app/src/test/resources/vectors")
    if (!File(dir, "index.json").exists()) {
        System.err.println("no index.json in $dir: pass the vectors folder")
        System.exit(2)
    }
    val t0 = System.nanoTime()
    val r = VectorSuite.runAll { name -> File(dir, name).readText() }
    for (p in r.passed) println("ok      $p")
    for (f in r.failures) println("FAILED  $f")
    println("uint8 pixels: ${r.pixels - r.pixelMismatches} of ${r.pixels} equal to Pillow's (max difference ${r.maxPixelDiff})")
    println("model-input values: ${r.tensorValues - r.tensorMismatches} of ${r.tensorValues} exactly equal")
    println("time: ${(System.nanoTime() - t0) / 1000000} ms")
    println("${r.passed.size} passed, ${r.failures.size} failed")
    if (r.failures.isNotEmpty()) System.exit(1)
}
