'use strict';

/**
 * A minimal event emitter: listeners run in the order they were added,
 * and a listener added with once() is removed before it is called.
 */
class Emitter {
  constructor() {
    this.listeners = new Map();
  }

  on(event, fn) {
    if (!this.listeners.has(event)) {
      this.listeners.set(event, []);
    }
    this.listeners.get(event).push({ fn, once: false });
    return () => this.off(event, fn);
  }

  once(event, fn) {
    this.on(event, fn);
    const list = this.listeners.get(event);
    list[list.length - 1].once = true;
  }

  off(event, fn) {
    const list = this.listeners.get(event);
    if (!list) return;
    const index = list.findIndex((l) => l.fn === fn);
    if (index >= 0) list.splice(index, 1);
  }

  emit(event, ...args) {
    const list = this.listeners.get(event);
    if (!list || list.length === 0) return false;
    for (const listener of [...list]) {
      if (listener.once) this.off(event, listener.fn);
      listener.fn(...args);
    }
    return true;
  }
}

module.exports = { Emitter };

if (require.main === module) {
  const bus = new Emitter();
  const stop = bus.on('tick', (n) => console.log('tick', n));
  bus.once('tick', () => console.log('first tick only'));
  bus.emit('tick', 1);
  bus.emit('tick', 2);
  stop();
  console.log('still listening:', bus.emit('tick', 3));
}
