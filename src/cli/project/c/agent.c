/* {{name}}: an edgeleaf agent in C, a WASI preview1 command.
 *
 * The node runs it once per message: the payload arrives on stdin, whatever it
 * writes to stdout is the reply (and the recorded result), and each line it writes
 * to stderr is a log line. argv[0] is the agent's name, argv[1] the subject the
 * message arrived on; the deployment's config map arrives as environment variables.
 * Exit status 0 is success; any other is a failure of the agent's own.
 */
#include <stdio.h>

int main(int argc, char **argv) {
    const char *subject = argc > 1 ? argv[1] : "(no subject)";
    char buf[4096];
    size_t n, total = 0;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        if (fwrite(buf, 1, n, stdout) != n) {
            fprintf(stderr, "{{name}}: cannot write the reply\n");
            return 1;
        }
        total += n;
    }
    fprintf(stderr, "{{name}} got %zu bytes on %s\n", total, subject);
    return 0;
}
