"""Maps the top-level folders train/, convert/ and apps/ to lafs_edge.train, lafs_edge.convert
and lafs_edge.apps (pyproject.toml holds everything else)."""
from setuptools import find_packages, setup

ROOTS = {"lafs_edge": "lafs_edge", "lafs_edge.train": "train", "lafs_edge.convert": "convert",
         "lafs_edge.apps": "apps"}

packages, package_dir = [], {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]
packages = sorted(set(packages))

setup(packages=packages, package_dir=package_dir)
