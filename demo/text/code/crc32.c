/* crc32.c: compute the CRC-32 (IEEE 802.3) checksum of files or standard input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint32_t table[256];

static void build_table(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
}

static uint32_t crc32_update(uint32_t crc, const unsigned char *buf, size_t len)
{
    crc = ~crc;
    while (len--)
        crc = table[(crc ^ *buf++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

static int checksum(FILE *f, const char *name)
{
    unsigned char buf[8192];
    uint32_t crc = 0;
    size_t n;

    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        crc = crc32_update(crc, buf, n);
    if (ferror(f)) {
        perror(name);
        return 1;
    }
    printf("%08x  %s\n", (unsigned)crc, name);
    return 0;
}

int main(int argc, char **argv)
{
    int status = 0;

    build_table();
    if (argc < 2)
        return checksum(stdin, "-");
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL) {
            perror(argv[i]);
            status = 1;
            continue;
        }
        status |= checksum(f, argv[i]);
        fclose(f);
    }
    return status;
}
