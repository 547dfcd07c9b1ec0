"""The mnist5k curves figure plots exactly the validation and test numbers of the runs it is given."""

import csv
import json

from paper_figures import mnist5k_curves


def our_run(path, method, output, curve, test):
    path.mkdir()
    (path / "config.yaml").write_text(f"method:\n  name: {method}\noutput: {output}\n")
    rows = ["step,seconds,metric,value"] + [f"{s},1.0,val_bpd,{v}" for s, v in curve] + [f"{curve[-1][0]},2.0,loss,0.5"]
    (path / "metrics.csv").write_text("\n".join(rows) + "\n")
    (path / "final.json").write_text(json.dumps({"test_bpd": test, "test_bpd_stderr": 0.01, "best_step": curve[0][0]}))


def test_curves_and_test_markers_are_the_runs_numbers(tmp_path):
    our_run(tmp_path / "bsi-discretised", "bsi", "discretised", [(150, 2.5), (300, 2.25)], 2.3)
    our_run(tmp_path / "vdm-point", "vdm", "point", [(150, 4.0), (300, 3.5)], 3.75)
    ref = tmp_path / "reference-bsi-point"
    ref.mkdir()
    (ref / "metrics.csv").write_text("epoch,step,train/loss,val/bpd\n0,149,0.3,\n0,149,,5.5\n0,299,,5.0\n")
    (ref / "result.json").write_text(json.dumps({"test_bpd": 5.25, "test_bpd_stderr": 0.02, "best_step": 300,
                                                 "metrics_csv": str(ref / "metrics.csv")}))
    (tmp_path / "logs").mkdir()  # not a run: skipped
    runs = [tmp_path / name for name in ("bsi-discretised", "vdm-point", "reference-bsi-point", "logs")]
    mnist5k_curves.main(["--runs", *map(str, runs), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "mnist5k_curves.png").stat().st_size > 1000
    with open(tmp_path / "out" / "mnist5k_curves.csv") as f:
        rows = [(r["run"], int(r["step"]), r["val_bpd"], r["test_bpd"]) for r in csv.DictReader(f)]
    assert rows == [
        ("bsi (discretised)", 150, "2.5", ""), ("bsi (discretised)", 300, "2.25", ""), ("bsi (discretised)", 150, "", "2.3"),
        ("vdm (point)", 150, "4.0", ""), ("vdm (point)", 300, "3.5", ""), ("vdm (point)", 150, "", "3.75"),
        ("bsi (point), reference code", 150, "5.5", ""), ("bsi (point), reference code", 300, "5.0", ""),
        ("bsi (point), reference code", 300, "", "5.25"),
    ]
