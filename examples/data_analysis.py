"""A data-analysis walk-through: upload a CSV, analyse it with pandas in a sandbox, save a chart.

    python examples/data_analysis.py [out_dir]

Writes `sales_by_region.png` (the chart drawn in the sandbox) and `summary.csv` (a file the
sandbox wrote, downloaded) into out_dir (default: the current directory).
"""

import base64
import csv
import io
import random
import sys
from pathlib import Path

from hutch import Sandbox


def make_csv() -> str:
    """A small sales table: 200 orders over four regions."""
    rng = random.Random(7)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["order_id", "region", "units", "unit_price", "date"])
    for i in range(200):
        writer.writerow(
            [
                i,
                rng.choice(["north", "south", "east", "west"]),
                rng.randint(1, 20),
                round(rng.uniform(2.0, 40.0), 2),
                f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            ]
        )
    return out.getvalue()


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    with Sandbox() as sandbox:
        # 1. Put the data into the sandbox.
        info = sandbox.files.write("/home/user/sales.csv", make_csv())
        print(f"uploaded {info.path}")

        # 2. Load it once; the DataFrame stays in the kernel for the next steps.
        loaded = sandbox.run_code(
            "import pandas as pd\n"
            "df = pd.read_csv('sales.csv', parse_dates=['date'])\n"
            "df['revenue'] = df['units'] * df['unit_price']\n"
            "df.head()"
        )
        if loaded.error:
            raise SystemExit(f"loading failed: {loaded.error.name}: {loaded.error.value}")
        head = loaded.results[0]
        print(f"columns: {list(head.data.keys()) if head.data else 'n/a'}")

        # 3. Summarise, and keep the summary as a file.
        summary = sandbox.run_code(
            "by_region = df.groupby('region')['revenue'].sum().sort_values(ascending=False).round(2)\n"
            "by_region.to_csv('summary.csv')\n"
            "print(by_region.to_string())"
        )
        print(summary.stdout, end="")

        # 4. Draw the chart in the sandbox; the PNG comes back as a result.
        chart = sandbox.run_code(
            "import matplotlib.pyplot as plt\n"
            "fig, ax = plt.subplots()\n"
            "ax.bar(by_region.index, by_region.values)\n"
            "ax.set_title('Revenue by region')\n"
            "ax.set_xlabel('region')\n"
            "ax.set_ylabel('revenue')\n"
            "plt.show()"
        )
        pngs = [r.png for r in chart.results if r.png]
        if not pngs:
            raise SystemExit("no chart came back")
        (out_dir / "sales_by_region.png").write_bytes(base64.b64decode(pngs[0]))
        print(f"saved {out_dir / 'sales_by_region.png'}")
        drawn = chart.results[0].chart
        if drawn is not None:
            kind = getattr(drawn.type, "value", drawn.type)
            print(f"chart type: {kind}")

        # 5. Fetch the file the analysis wrote.
        (out_dir / "summary.csv").write_text(sandbox.files.read("/home/user/summary.csv"))
        print(f"saved {out_dir / 'summary.csv'}")


if __name__ == "__main__":
    main()
