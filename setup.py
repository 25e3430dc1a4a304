"""The wheel also carries the repository's data/ and configs/ as medmerge/_bundle/{data,configs}.

pyproject.toml holds everything else; package-dir mappings to folders outside src/ cannot be
combined with `packages.find` there, so the package list is built here. The sample data and
the demo's configs thus exist once in git and still ship with a plain `pip install .`.
"""

from setuptools import find_namespace_packages, find_packages, setup

BUNDLE = {"medmerge._bundle.data": "data", "medmerge._bundle.configs": "configs"}
# every folder under data/ is listed too, else setuptools warns that it is left out
BUNDLE_FOLDERS = [f"medmerge._bundle.data.{name}" for name in find_namespace_packages("data")]

setup(
    packages=[*find_packages("src"), "medmerge.resources", *BUNDLE, *BUNDLE_FOLDERS],
    package_dir={"": "src", **BUNDLE},
)
