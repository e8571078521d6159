'use strict';

/**
 * Returns a function that delays calling fn until wait milliseconds have
 * passed without another call. Useful for search boxes and resize handlers.
 */
function debounce(fn, wait) {
  let timer = null;
  const debounced = function (...args) {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      fn.apply(this, args);
    }, wait);
  };
  debounced.cancel = () => {
    clearTimeout(timer);
    timer = null;
  };
  return debounced;
}

/**
 * Returns a function that calls fn at most once every wait milliseconds,
 * always with the most recent arguments.
 */
function throttle(fn, wait) {
  let last = 0;
  let pending = null;
  return function (...args) {
    const now = Date.now();
    const remaining = wait - (now - last);
    if (remaining <= 0) {
      last = now;
      fn.apply(this, args);
    } else {
      clearTimeout(pending);
      pending = setTimeout(() => {
        last = Date.now();
        fn.apply(this, args);
      }, remaining);
    }
  };
}

module.exports = { debounce, throttle };

if (require.main === module) {
  const log = debounce((word) => console.log('search for', word), 50);
  ['p', 'py', 'pyt', 'pyth', 'python'].forEach((w) => log(w));
}
