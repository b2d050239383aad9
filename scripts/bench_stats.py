#!/usr/bin/env python3
"""Summary of paired per-round ratios for the bench scripts.

    python3 scripts/bench_stats.py R1 R2 ...   ->   "0.969 [0.891, 1.055]"

The geometric mean of the ratios with a 95% t-interval on their logs. The
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


def main(args):
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
    m = sum(x) / len(x)
    h = t95(len(x) - 1) * math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1) / len(x))
    print("%.3f [%.3f, %.3f]" % (math.exp(m), math.exp(m - h), math.exp(m + h)))


if __name__ == "__main__":
    main(sys.argv[1:])
