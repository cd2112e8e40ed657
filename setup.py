"""Package layout that pyproject.toml cannot express: protocol_specs/ at the top of the source tree is installed
as the ``kafkite.protocol_specs`` package, so that wheels, sdists and editable installs all carry the specs."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(include=["kafkite", "kafkite.*"], exclude=["*.__pycache__"]),
        "kafkite.protocol_specs",
    ],
    package_dir={"kafkite.protocol_specs": "protocol_specs"},
)
