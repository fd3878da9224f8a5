"""Build `country.csv`: ISO 3166-1 alpha-2 code -> UN M49 sub-region -> UN M49 region.

Why a script: the table comes from the maintained package `country_converter` (columns `ISO2`,
`UNregion`), which we do not want as a runtime dependency. Run this once when the package updates;
the connector reads only the CSV. The sub-region is country_converter's `UNregion`: the M49
intermediate region where M49 defines one (e.g. "Western Africa", "Caribbean"), else the M49
sub-region ("Southern Europe"). The region is the M49 region that contains it (Africa, Americas,
Asia, Europe, Oceania); Antarctica, which M49 leaves outside every region, is its own region.

    .venv/bin/pip install country_converter
    .venv/bin/python mappings/schema/hierarchies/build_country.py
"""

from __future__ import annotations

import csv
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGION_OF_SUB_REGION = {
    "Northern Africa": "Africa", "Eastern Africa": "Africa", "Middle Africa": "Africa",
    "Southern Africa": "Africa", "Western Africa": "Africa",
    "Caribbean": "Americas", "Central America": "Americas", "South America": "Americas",
    "Northern America": "Americas",
    "Central Asia": "Asia", "Eastern Asia": "Asia", "South-eastern Asia": "Asia",
    "Southern Asia": "Asia", "Western Asia": "Asia",
    "Eastern Europe": "Europe", "Northern Europe": "Europe", "Southern Europe": "Europe",
    "Western Europe": "Europe",
    "Australia and New Zealand": "Oceania", "Melanesia": "Oceania", "Micronesia": "Oceania",
    "Polynesia": "Oceania",
    "Antarctica": "Antarctica",
}


def main() -> None:
    import country_converter

    data = country_converter.CountryConverter().data
    rows = []
    for iso2, sub_region in zip(data["ISO2"], data["UNregion"]):
        # a few entries are regexes of aliases, e.g. "^GB$|^UK$": the first alternative is ISO's
        code = str(iso2).split("|")[0].strip("^$")
        rows.append((code, sub_region, REGION_OF_SUB_REGION[sub_region]))
    rows.sort()
    with (HERE / "country.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["value", "UN M49 sub-region", "UN M49 region"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} countries from country_converter {version('country_converter')}")


if __name__ == "__main__":
    main()
