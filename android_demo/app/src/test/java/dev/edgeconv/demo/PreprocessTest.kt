package dev.edgeconv.demo

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

/**
 * The app's core (dev.edgeconv.demo.core) on the shared vectors (src/test/resources/vectors,
 * written by `python -m edgeconv.android vectors` from the host's preprocessing):
 * `./gradlew test`. Without Gradle the same checks run with plain kotlinc (VectorCheck.kt,
 * and this class through tools/junit-shim; see tests/test_android_vectors.py).
 */
class PreprocessTest {
    private fun read(name: String): String {
        val stream = PreprocessTest::class.java.classLoader!!.getResourceAsStream("vectors/$name")
            ?: throw AssertionError("vectors/$name is not on the test classpath: run `python -m edgeconv.android vectors`")
        return stream.use { String(it.readBytes(), Charsets.UTF_8) }
    }

    private fun images(): VectorReport {
        val r = VectorReport()
        val index = dev.edgeconv.demo.core.Json.parse(read("index.json")) as Map<*, *>
        for (f in index["files"] as List<*>) VectorSuite.runImage(read(f as String), f, r)
        return r
    }

    @Test
    fun resizeIsBitExactWithPillow() {
        val r = images()
        assertTrue("no vector cases found", r.passed.size + r.failures.size >= 10)
        assertEquals("uint8 pixels differing from Pillow's", 0L, r.pixelMismatches.toLong())
        assertEquals("max uint8 difference from Pillow", 0L, r.maxPixelDiff.toLong())
    }

    @Test
    fun modelInputEqualsHost() {
        val r = images()
        assertTrue(r.failures.joinToString("\n"), r.failures.isEmpty())
        assertEquals("model-input values differing from the host's", 0L, r.tensorMismatches.toLong())
    }

    @Test
    fun manifestChecksAgreeWithPython() {
        val r = VectorReport()
        VectorSuite.runManifestChecks(read("manifests.json"), r)
        assertTrue("no manifest cases", r.passed.size + r.failures.size >= 5)
        assertTrue(r.failures.joinToString("\n"), r.failures.isEmpty())
    }

    @Test
    fun postprocess() {
        val r = VectorReport()
        VectorSuite.runPostprocess(r)
        assertTrue(r.failures.joinToString("\n"), r.failures.isEmpty())
    }
}
