// Package lru implements a fixed-size least-recently-used cache.
package lru

import "container/list"

// Cache keeps at most Capacity entries and evicts the least recently used one.
type Cache[K comparable, V any] struct {
	capacity int
	order    *list.List
	items    map[K]*list.Element
}

type item[K comparable, V any] struct {
	key   K
	value V
}

// New returns an empty cache that holds up to capacity entries.
func New[K comparable, V any](capacity int) *Cache[K, V] {
	if capacity <= 0 {
		panic("lru: capacity must be positive")
	}
	return &Cache[K, V]{
		capacity: capacity,
		order:    list.New(),
		items:    make(map[K]*list.Element, capacity),
	}
}

// Get returns the value for key and marks it as recently used.
func (c *Cache[K, V]) Get(key K) (V, bool) {
	if el, ok := c.items[key]; ok {
		c.order.MoveToFront(el)
		return el.Value.(*item[K, V]).value, true
	}
	var zero V
	return zero, false
}

// Put stores value under key, evicting the oldest entry when the cache is full.
func (c *Cache[K, V]) Put(key K, value V) {
	if el, ok := c.items[key]; ok {
		el.Value.(*item[K, V]).value = value
		c.order.MoveToFront(el)
		return
	}
	if c.order.Len() == c.capacity {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*item[K, V]).key)
	}
	c.items[key] = c.order.PushFront(&item[K, V]{key, value})
}

// Len reports the number of entries in the cache.
func (c *Cache[K, V]) Len() int { return c.order.Len() }
