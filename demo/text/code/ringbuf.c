/* ringbuf.c: a fixed-capacity ring buffer of bytes, with a small self-test. */
#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ringbuf {
    unsigned char *data;
    size_t capacity;
    size_t head; /* next byte to read */
    size_t len;  /* bytes currently stored */
};

int ringbuf_init(struct ringbuf *rb, size_t capacity)
{
    rb->data = malloc(capacity);
    if (rb->data == NULL)
        return -1;
    rb->capacity = capacity;
    rb->head = 0;
    rb->len = 0;
    return 0;
}

void ringbuf_free(struct ringbuf *rb)
{
    free(rb->data);
    rb->data = NULL;
    rb->capacity = rb->head = rb->len = 0;
}

/* Writes up to n bytes and returns how many fitted. */
size_t ringbuf_write(struct ringbuf *rb, const void *src, size_t n)
{
    const unsigned char *p = src;
    size_t room = rb->capacity - rb->len;
    size_t count = n < room ? n : room;
    for (size_t i = 0; i < count; i++) {
        size_t tail = (rb->head + rb->len) % rb->capacity;
        rb->data[tail] = p[i];
        rb->len++;
    }
    return count;
}

/* Reads up to n bytes into dst and returns how many were read. */
size_t ringbuf_read(struct ringbuf *rb, void *dst, size_t n)
{
    unsigned char *p = dst;
    size_t count = n < rb->len ? n : rb->len;
    for (size_t i = 0; i < count; i++) {
        p[i] = rb->data[rb->head];
        rb->head = (rb->head + 1) % rb->capacity;
        rb->len--;
    }
    return count;
}

int main(void)
{
    struct ringbuf rb;
    char out[16];

    if (ringbuf_init(&rb, 8) != 0) {
        perror("ringbuf_init");
        return EXIT_FAILURE;
    }
    assert(ringbuf_write(&rb, "hello", 5) == 5);
    assert(ringbuf_read(&rb, out, 3) == 3);
    assert(memcmp(out, "hel", 3) == 0);
    /* This write wraps around the end of the storage. */
    assert(ringbuf_write(&rb, "world!", 6) == 6);
    size_t n = ringbuf_read(&rb, out, sizeof out);
    out[n] = '\0';
    printf("%zu bytes: %s\n", n, out);
    ringbuf_free(&rb);
    return EXIT_SUCCESS;
}
