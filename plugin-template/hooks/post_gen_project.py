"""Keep the plugin module and tests of the chosen kind; drop the others."""

from pathlib import Path

KIND = "{{ cookiecutter.kind }}"
KINDS = ("traversal", "name_service", "signal", "phase")
package = Path("{{ cookiecutter.module_name }}")
tests = Path("tests")

for kind in KINDS:
    module, test = package / f"_{kind}.py", tests / f"_test_{kind}.py"
    if kind == KIND:
        module.rename(package / "plugin.py")
        test.rename(tests / "test_plugin.py")
    else:
        module.unlink()
        test.unlink()
