"""``+experiment=<name>`` selects ``experiments/<name>.yaml`` from the project folder.

Hydra looks a group up as ``<search path>/<group>/<name>.yaml``; a small config source maps the
``experiment`` group onto the ``experiments/`` folder itself so experiment files sit at the top of
the repository. The folder is ``$DLAS_EXPERIMENTS_DIR``, else ``./experiments``, else the one next
to the dlas package (a source checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "experiment"
SCHEME = "dlas-experiments"


def experiments_dir() -> Path | None:
    candidates = [
        os.environ.get("DLAS_EXPERIMENTS_DIR"),
        "experiments",
        Path(__file__).resolve().parents[2] / "experiments",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate).resolve()
    return None


class ExperimentsConfigSource(ConfigSource):
    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _file(self, config_path: str) -> Path | None:
        group, _, name = config_path.partition("/")
        if group != GROUP or not name or "/" in name:
            return None
        return Path(self.path) / self._normalize_file_name(name)

    def load_config(self, config_path: str) -> ConfigResult:
        path = self._file(config_path)
        if path is None or not path.is_file():
            raise ConfigLoadError(f"Config not found: {config_path}")
        text = path.read_text(encoding="utf-8")
        return ConfigResult(
            config=OmegaConf.create(text),
            path=f"{SCHEME}://{self.path}",
            provider=self.provider,
            header=self._get_header_dict(text[:512]),
        )

    def available(self) -> bool:
        return Path(self.path).is_dir()

    def is_group(self, config_path: str) -> bool:
        return config_path in ("", GROUP)

    def is_config(self, config_path: str) -> bool:
        path = self._file(config_path)
        return path is not None and path.is_file()

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        files: list[str] = []
        if config_path == "":
            if results_filter in (None, ObjectType.GROUP):
                files.append(GROUP)
        elif config_path == GROUP and results_filter in (None, ObjectType.CONFIG):
            files = [p.stem for p in Path(self.path).glob("*.yaml")]
        return sorted(files)


class ExperimentsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        root = experiments_dir()
        if root is not None:
            search_path.append(provider="dlas-experiments", path=f"{SCHEME}://{root}")
