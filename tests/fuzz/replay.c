/*
 * replay.c - runs a fuzz target over its corpus without libFuzzer, for plain CI.
 *
 * Linked with one fuzz target (fuzz_validate.c or fuzz_pages.c) in place of libFuzzer's main:
 * every argument is a file or a directory of files, and each file is fed once to
 * LLVMFuzzerTestOneInput. Built with any C compiler and, in CI, with ASan+UBSan, so the corpus
 * (including the regression input of every bug found) is rechecked on every run. A failed
 * check in the target aborts, which fails the test. Like zstd's regression driver.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_data_producer.h"

static int run_file(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return 1;
    }
    fseek(fp, 0, SEEK_END);
    const long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc(size > 0 ? (size_t)size : 1);
    const size_t got = buf ? fread(buf, 1, (size_t)(size > 0 ? size : 0), fp) : 0;
    fclose(fp);
    if (buf == NULL || (long)got != size) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(buf);
        return 1;
    }
    LLVMFuzzerTestOneInput(buf, got);
    free(buf);
    return 0;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc, char **argv) {
    long files = 0;
    int errors = 0;
    for (int a = 1; a < argc; a++) {
        struct stat st;
        if (stat(argv[a], &st) != 0) {
            fprintf(stderr, "replay: no such file or directory: %s\n", argv[a]);
            errors++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            errors += run_file(argv[a]);
            files++;
            continue;
        }
        DIR *dir = opendir(argv[a]);
        if (dir == NULL) {
            errors++;
            continue;
        }
        /* Sorted, so that a failure is reproducible by position. */
        char **names = NULL;
        size_t count = 0, cap = 0;
        for (struct dirent *e; (e = readdir(dir)) != NULL;) {
            if (e->d_name[0] == '.') continue;
            if (count == cap) {
                cap = cap ? 2 * cap : 256;
                char **grown = realloc(names, cap * sizeof *names);
                if (grown == NULL) abort();
                names = grown;
            }
            names[count] = malloc(strlen(argv[a]) + strlen(e->d_name) + 2);
            if (names[count] == NULL) abort();
            sprintf(names[count], "%s/%s", argv[a], e->d_name);
            count++;
        }
        closedir(dir);
        if (count) qsort(names, count, sizeof *names, cmp_names);
        for (size_t i = 0; i < count; i++) {
            if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
                errors += run_file(names[i]);
                files++;
            }
            free(names[i]);
        }
        free(names);
    }
    printf("replay: %ld inputs, %d unreadable\n", files, errors);
    return errors || files == 0 ? 1 : 0;
}
