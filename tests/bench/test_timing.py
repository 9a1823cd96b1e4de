from radlab.bench import Measurement, measure, ratio_table


def test_measure_keeps_fastest_rate_and_counts_items():
    calls = []

    def work() -> int:
        calls.append(1)
        return 10

    m = measure("w", work, repeat=3, warmup=2)
    assert len(calls) == 5 and m.items == 10 and m.seconds > 0


def test_ratio_table_is_relative_to_reference():
    rows = [Measurement("ref", 10, 1.0), Measurement("fast", 100, 1.0)]
    table = ratio_table("t", rows, "ref")
    ratios = list(table.columns[2].cells)
    assert ratios == ["1.00", "10.00"]
