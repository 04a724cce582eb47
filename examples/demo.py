"""The README's example, run by `make demo`: parallel speed-up, a DataFrame, partial failure."""

import time

from mapnb import MapTaskError, map_task, task


@task(retries=1, timeout=30)
def do_something(value: str) -> str:
    print(f"Started processing: {value}", flush=True)
    time.sleep(1)
    return f"{value}-processed"


def check(x: int) -> float:
    if x == 3:
        raise ValueError(f"{x} is unlucky")
    return x**0.5


if __name__ == "__main__":
    values = ["foo", "bar", "baz", "qux"]

    t0 = time.perf_counter()
    serial = [do_something(v) for v in values]
    t_serial = time.perf_counter() - t0

    t0 = time.perf_counter()
    df = map_task(do_something, concurrency=4)(value=values)
    t_mapnb = time.perf_counter() - t0

    print(df.to_string())
    assert df["output"].tolist() == serial
    print(
        f"\nserial loop: {t_serial:.2f} s   mapnb local pool: {t_mapnb:.2f} s   speed-up: {t_serial / t_mapnb:.1f}x"
    )

    print("\nA failing item is None when min_success_ratio allows it:")
    print(map_task(check, min_success_ratio=0.5)(x=range(5)).to_string())

    print("\nAnd an informative error when it does not:")
    try:
        map_task(check)(x=range(5))
    except MapTaskError as e:
        print(f"MapTaskError: {e}")
