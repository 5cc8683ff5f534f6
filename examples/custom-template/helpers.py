"""Baked into my-custom-template: every sandbox of it can `import helpers`."""

import pandas as pd  # type: ignore[import-untyped]


def load_sales() -> pd.DataFrame:
    """The sales table the template ships in /home/user/data."""
    return pd.read_csv("/home/user/data/sales.csv")
