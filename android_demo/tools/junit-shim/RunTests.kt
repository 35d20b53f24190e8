// Runs the @Test methods of the JUnit classes named on the command line (with JUnitShim.kt):
//   java -cp vectorcheck.jar:app/src/test/resources org.junit.RunTestsKt dev.edgeconv.demo.PreprocessTest
// Prints one line per test, then "N passed, M failed"; exits 1 if any failed.
package org.junit

fun main(args: Array<String>) {
    var passed = 0
    var failed = 0
    for (name in args) {
        val cls = Class.forName(name)
        for (m in cls.methods.sortedBy { it.name }) {
            if (m.getAnnotation(Test::class.java) == null) continue
            try {
                m.invoke(cls.getDeclaredConstructor().newInstance())
                println("ok      ${cls.simpleName}.${m.name}")
                passed++
            } catch (e: java.lang.reflect.InvocationTargetException) {
                println("FAILED  ${cls.simpleName}.${m.name}: ${e.targetException}")
                failed++
            }
        }
    }
    println("$passed passed, $failed failed")
    if (failed > 0 || passed == 0) System.exit(1)
}
