/* wc.c: count lines, words and bytes, like a minimal version of wc(1). */
#include <ctype.h>
#include <stdio.h>

struct counts {
    unsigned long lines, words, bytes;
};

static struct counts count_stream(FILE *f)
{
    struct counts c = {0, 0, 0};
    int ch, in_word = 0;

    while ((ch = getc(f)) != EOF) {
        c.bytes++;
        if (ch == '\n')
            c.lines++;
        if (isspace(ch)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            c.words++;
        }
    }
    return c;
}

int main(int argc, char **argv)
{
    struct counts total = {0, 0, 0};
    int status = 0;

    if (argc == 1) {
        struct counts c = count_stream(stdin);
        printf("%7lu %7lu %7lu\n", c.lines, c.words, c.bytes);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "r");
        if (f == NULL) {
            perror(argv[i]);
            status = 1;
            continue;
        }
        struct counts c = count_stream(f);
        fclose(f);
        printf("%7lu %7lu %7lu %s\n", c.lines, c.words, c.bytes, argv[i]);
        total.lines += c.lines;
        total.words += c.words;
        total.bytes += c.bytes;
    }
    if (argc > 2)
        printf("%7lu %7lu %7lu total\n", total.lines, total.words, total.bytes);
    return status;
}
