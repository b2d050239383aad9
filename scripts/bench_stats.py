#!/usr/bin/env python3
"""Summary of paired per-round ratios for the bench scripts.

    python3 scripts/bench_stats.py R1 R2 ...            ->   "0.969 [0.891, 1.055]"
    python3 scripts/bench_stats.py --median R1 R2 ...   ->   "0.988 [0.951, 1.020]"

The geometric mean of the ratios with a 95% t-interval on their logs, or
(--median) their median with a distribution-free 95% interval: the order
statistics a binomial(n, 1/2) count puts around it, which a disturbed
round (this host's neighbours) cannot drag the way it drags a mean. The
rounds are paired (both sides run back to back), so this is the estimate
to judge a target such as "≤ 5% overhead" by: met when the interval lies
on the right side of it, not shown either way when the interval spans it.
"""
import math
import sys

# Two-sided 95% Student t quantiles by degrees of freedom.
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23,
       11: 2.20, 12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 16: 2.12, 17: 2.11, 18: 2.10, 19: 2.09,
       20: 2.09, 25: 2.06, 30: 2.04}


def t95(df):
    # Between rows, the row with fewer degrees of freedom: a wider interval, never a narrower one.
    return T95[max(k for k in T95 if k <= df)]


def median_interval(xs):
    """Median of `xs` and the widest-needed order-statistic interval with >= 95% coverage."""
    xs = sorted(xs)
    n = len(xs)
    med = (xs[(n - 1) // 2] + xs[n // 2]) / 2
    # Largest k with P(Binomial(n, 1/2) <= k - 1) <= 2.5%: [x_k, x_(n+1-k)] covers the median.
    k, tail = 0, 0.0
    while True:
        tail += math.comb(n, k) / 2**n
        if tail > 0.025:
            break
        k += 1
    if k == 0:
        return med, None  # too few rounds for a 95% interval
    return med, (xs[k - 1], xs[n - k])


def main(args):
    median = "--median" in args
    args = [a for a in args if a != "--median"]
    x = []
    for v in args:
        try:
            f = float(v)
        except ValueError:
            continue
        if f > 0:
            x.append(math.log(f))
    if len(x) < 2:
        print("n/a")
        return
    if median:
        med, ci = median_interval([math.exp(v) for v in x])
        print("%.3f [%s]" % (med, "%.3f, %.3f" % ci if ci else "n/a: fewer than 6 rounds"))
        return
    m = sum(x) / len(x)
    h = t95(len(x) - 1) * math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1) / len(x))
    print("%.3f [%.3f, %.3f]" % (math.exp(m), math.exp(m - h), math.exp(m + h)))


if __name__ == "__main__":
    main(sys.argv[1:])
