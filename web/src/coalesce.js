// One run of an async task at a time, and one more if asked again meanwhile: the catch-up after
// a (re)connect and after `resync` events (the broker node lost events for this user while its
// own link to the cluster was down). A run may have read before the request that came during
// it, so one more follows; ten requests during a run still cost one more, not ten.

/**
 * @param {() => Promise<void>} task
 * @returns {() => Promise<void>} runs `task` now, or once more after the run under way
 */
export function oneAtATime(task) {
  let running = null;
  let again = false;
  return function run() {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await task();
        } while (again);
      } finally {
        running = null;
      }
    })();
    return running;
  };
}
