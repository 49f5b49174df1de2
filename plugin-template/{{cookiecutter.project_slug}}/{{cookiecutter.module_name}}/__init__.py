"""{{ cookiecutter.project_slug }}: a warpgate plugin (the hooks are in ``plugin``).

{{ cookiecutter.description }}.
"""

__version__ = "0.1.0"
