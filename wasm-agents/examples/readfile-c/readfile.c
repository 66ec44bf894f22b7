/*
 * edgeleaf example: a WASI preview1 command module in C that reads a granted file.
 *
 * The file is the payload (a path), or else the config value FILE (the agent's
 * config is its environment). Its contents are the reply (stdout). The file must
 * lie in a directory granted to the agent (deploy --read DIR, within the node's
 * [devices] ceiling): the node preopens each grant at the same absolute path, and
 * wasi-libc's fopen finds it there. Anything else fails with the sandbox's error,
 * written to stderr, and exit code 2.
 *
 * Build: clang --target=wasm32-wasi --sysroot=/usr -O2 -o readfile-c.wasm readfile.c
 * (wasm-agents/build.sh does this).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    static char path[4096];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof path - 1 && (n = read(0, path + len, sizeof path - 1 - len)) > 0) {
        len += (size_t)n;
    }
    while (len > 0 && (path[len - 1] == '\n' || path[len - 1] == ' ')) len--;
    path[len] = '\0';
    if (len == 0) {
        const char *file = getenv("FILE");
        if (file == NULL) {
            fprintf(stderr, "readfile-c: no path in the payload and no FILE in the config\n");
            return 2;
        }
        snprintf(path, sizeof path, "%s", file);
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "readfile-c: %s: %s\n", path, strerror(errno));
        return 2;
    }
    char buf[16384];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        if (fwrite(buf, 1, got, stdout) != got) {
            fprintf(stderr, "readfile-c: writing stdout failed\n");
            return 1;
        }
    }
    fclose(f);
    return 0;
}
