"""pyproject.toml and requirements.txt pin the same versions; the package is the library alone."""
import os
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def requirement_pins() -> set[str]:
    with open(os.path.join(REPO, "requirements.txt")) as f:
        return {line.split("#")[0].strip() for line in f} - {""}


def pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_pyproject_declares_exactly_the_pins_of_requirements_txt():
    project = pyproject()["project"]
    optional = {pin for group in project["optional-dependencies"].values() for pin in group}
    assert set(project["dependencies"]) | optional == requirement_pins()
    assert all("==" in pin for pin in requirement_pins())
    assert "pytest==9.2.0" not in project["dependencies"]       # test tools are optional


def test_the_package_is_jaxcnn_and_pytest_is_configured_elsewhere():
    config = pyproject()
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["jaxcnn*"]
    assert "pytest" not in config["tool"]                       # tests/conftest.py
