// A stand-in for the few JUnit 4 names PreprocessTest uses, so that the real JUnit test
// compiles and runs with a plain kotlinc (no Gradle, no Maven). NOT part of the Gradle
// build: Gradle uses real JUnit (testImplementation("junit:junit:4.13.2")).
package org.junit

@Retention(AnnotationRetention.RUNTIME)
@Target(AnnotationTarget.FUNCTION)
annotation class Test

object Assert {
    @JvmStatic
    fun assertTrue(message: String, condition: Boolean) {
        if (!condition) throw AssertionError(message)
    }

    @JvmStatic
    fun assertEquals(message: String, expected: Long, actual: Long) {
        if (expected != actual) throw AssertionError("$message: expected $expected, got $actual")
    }
}
