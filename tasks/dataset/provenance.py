"""The versions of the packages that made a run, for its manifest and card."""

from __future__ import annotations

import importlib.metadata

MANIFEST_PACKAGES = ("toolace-platform", "prefect", "openai", "torch", "transformers", "polars", "pydantic",
                     "llama_cpp_python", "pandera", "great-expectations", "s3fs")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in MANIFEST_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
