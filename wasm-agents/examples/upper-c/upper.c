/*
 * edgeleaf example: a WASI preview1 command module in C (the NEX function model).
 *
 * Reads the whole trigger payload from stdin, writes it uppercased (ASCII) to stdout
 * as the reply, and writes one log line to stderr:
 *     upper-c: <n> bytes from <subject>
 * The subject is argv[1]. Exits 0.
 *
 * Build: clang --target=wasm32-wasi --sysroot=/usr -O2 -o upper-c.wasm upper.c
 * (wasm-agents/build.sh does this).
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *subject = argc > 1 ? argv[1] : "(no subject)";
    char buf[16384];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0) {
            fprintf(stderr, "upper-c: reading stdin failed\n");
            return 1;
        }
        if (n == 0) break;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] = (char)(buf[i] - 'a' + 'A');
        }
        if (write_all(1, buf, (size_t)n) != 0) {
            fprintf(stderr, "upper-c: writing stdout failed\n");
            return 1;
        }
        total += (size_t)n;
    }
    fprintf(stderr, "upper-c: %zu bytes from %s\n", total, subject);
    return 0;
}
