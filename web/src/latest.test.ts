import { describe, expect, it } from "vitest";
import { latestOnly } from "./latest";

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  return { promise, resolve, reject };
}

describe("latestOnly", () => {
  it("drops an older answer that arrives after a newer request began", async () => {
    const run = latestOnly();
    const seen: string[] = [];
    const week = deferred<string>();
    const month = deferred<string>();
    const first = run(week.promise, (v) => seen.push(v), () => seen.push("error"));
    const second = run(month.promise, (v) => seen.push(v), () => seen.push("error"));
    month.resolve("30 days");
    week.resolve("7 days");
    await Promise.all([first, second]);
    expect(seen).toEqual(["30 days"]);
  });

  it("drops an older failure too, and reports the latest one", async () => {
    const run = latestOnly();
    const errors: unknown[] = [];
    const old = deferred<string>();
    const latest = deferred<string>();
    const a = run(old.promise, () => undefined, (e) => errors.push(e));
    const b = run(latest.promise, () => undefined, (e) => errors.push(e));
    old.reject(new Error("old"));
    latest.reject(new Error("new"));
    await Promise.all([a, b]);
    expect(errors.map((e) => (e as Error).message)).toEqual(["new"]);
  });

  it("answers every request made one after the other", async () => {
    const run = latestOnly();
    const seen: number[] = [];
    await run(Promise.resolve(1), (v) => seen.push(v), () => undefined);
    await run(Promise.resolve(2), (v) => seen.push(v), () => undefined);
    expect(seen).toEqual([1, 2]);
  });
});
