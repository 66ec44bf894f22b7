/*
 * edgeleaf test agent: a WASI preview1 command module that exits on request.
 *
 * Reads all of stdin. If it is `exit:<n>` (optionally followed by a newline), writes
 * "exiting" to stdout and calls exit(n). Otherwise echoes stdin to stdout and exits 0.
 *
 * Build: clang --target=wasm32-wasi --sysroot=/usr -O2 -o exit-c.wasm exit.c
 * (wasm-agents/build.sh does this).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) return 70;
    for (;;) {
        if (len == cap) {
            cap *= 2;
            char *grown = realloc(buf, cap);
            if (!grown) return 70;
            buf = grown;
        }
        ssize_t n = read(0, buf + len, cap - len);
        if (n < 0) return 74;
        if (n == 0) break;
        len += (size_t)n;
    }

    size_t end = len;
    while (end > 0 && (buf[end - 1] == '\n' || buf[end - 1] == '\r')) end--;
    if (end > 5 && memcmp(buf, "exit:", 5) == 0) {
        int code = 0;
        size_t i = 5;
        int ok = 1;
        for (; i < end; i++) {
            if (buf[i] < '0' || buf[i] > '9' || code > 100000) { ok = 0; break; }
            code = code * 10 + (buf[i] - '0');
        }
        if (ok) {
            fputs("exiting", stdout);
            fflush(stdout);
            exit(code);
        }
    }

    size_t off = 0;
    while (off < len) {
        ssize_t n = write(1, buf + off, len - off);
        if (n < 0) return 74;
        off += (size_t)n;
    }
    return 0;
}
