/** A sequence of requests of which only the latest counts: `run(promise, ok, fail)` calls `ok` or
 * `fail` only if no newer request was started through the same sequence meanwhile, so a slow
 * answer to an old question (the usage of 7 days, after the person chose 30) cannot overwrite the
 * answer to the new one. */
export function latestOnly() {
  let latest = 0;
  return function run<T>(request: Promise<T>, ok: (value: T) => void, fail: (error: unknown) => void): Promise<void> {
    const mine = ++latest;
    return request.then(
      (value) => {
        if (mine === latest) ok(value);
      },
      (error: unknown) => {
        if (mine === latest) fail(error);
      },
    );
  };
}
