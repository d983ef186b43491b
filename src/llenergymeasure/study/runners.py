"""Runners: how one experiment of a study is started, per backend (user config ``runners:``).

A runner takes a `study.worker.WorkerRequest` and returns a `study.child.Outcome`:

* ``local`` (:class:`LocalRunner`): a fresh ``spawn`` child of the study process
  (`study.child.run_child`), the default;
* ``docker:<image>`` (`study.docker_runner.DockerRunner`): one ephemeral container of
  that image.

Both give the same Outcome (completed with its result.json, or failed with a reason and a
detail text), so the study runner records, retries and resumes them the same way.
:class:`RunnerSet` holds one runner per spec for a study, checks the Docker ones before
anything starts (all problems together, each with its fix) and, on resume, removes
containers an earlier run of the study left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from llenergymeasure.exceptions import PreflightError
from llenergymeasure.study import recovery
from llenergymeasure.study.child import Outcome, ProgressSink, WorkerTarget, run_child
from llenergymeasure.study.docker import DOCKER, docker_preflight, image_of
from llenergymeasure.study.docker_runner import DockerRunner
from llenergymeasure.study.worker import WorkerRequest, experiment_worker

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.config.user_config import UserConfig
    from llenergymeasure.study.manifest import RunnerInfo

LOCAL = "local"
#: Told who runs an attempt as soon as it has started (the study records it in the manifest,
#: so a resume after the study process died can find it again).
StartSink = Callable[["RunnerInfo"], None]


class ExperimentRunner(Protocol):
    """Runs one experiment attempt somewhere and reports how it went."""

    @property
    def spec(self) -> str:
        """``local`` or ``docker:<image>``."""
        ...

    def run(
        self,
        request: WorkerRequest,
        timeout_s: float,
        on_progress: ProgressSink,
        on_start: StartSink | None = None,
    ) -> Outcome:
        """Run ``request`` within ``timeout_s``; progress goes to ``on_progress``, who runs
        it to ``on_start`` once it has started. KeyboardInterrupt stops what was started,
        then propagates."""
        ...


class LocalRunner:
    """A fresh child per experiment (`study.child`); the fork server imports the
    frameworks only for the real experiment worker (a test's fake target needs none)."""

    def __init__(self, target: WorkerTarget) -> None:
        self.target = target

    @property
    def spec(self) -> str:
        """Always ``local``."""
        return LOCAL

    def run(
        self,
        request: WorkerRequest,
        timeout_s: float,
        on_progress: ProgressSink,
        on_start: StartSink | None = None,
    ) -> Outcome:
        """Run the worker target in a fresh child (recorded by pid and start time)."""

        def started(pid: int) -> None:
            if on_start is not None:
                on_start(recovery.local_runner(pid))

        real = self.target is experiment_worker
        return run_child(self.target, request, timeout_s, on_progress, started, frameworks=real)


class RunnerSet:
    """The runners a study uses: one per spec, chosen by each experiment's backend."""

    def __init__(
        self,
        user_config: UserConfig | None,
        worker_target: WorkerTarget,
        *,
        docker: str = DOCKER,
    ) -> None:
        self.user_config = user_config
        self.docker = docker
        self._local = LocalRunner(worker_target)
        self._docker: dict[str, DockerRunner] = {}

    def spec_for(self, config: ExperimentConfig) -> str:
        """The runner spec of ``config``'s backend (``local`` without a user config)."""
        if self.user_config is None:
            return LOCAL
        return self.user_config.runner_for(config.backend)

    def for_config(self, config: ExperimentConfig) -> ExperimentRunner:
        """The runner for ``config``."""
        image = image_of(self.spec_for(config))
        return self._local if image is None else self._docker_runner(image)

    def _docker_runner(self, image: str) -> DockerRunner:
        if image not in self._docker:
            self._docker[image] = DockerRunner(
                image, user_config=self.user_config, docker=self.docker
            )
        return self._docker[image]

    def preflight(self, configs: Iterable[ExperimentConfig]) -> None:
        """Check Docker, the NVIDIA runtime and the images for every experiment that runs
        in a container; PreflightError listing every problem with its fix."""
        images: dict[str, str] = {}
        needs_gpu = False
        for config in configs:
            image = image_of(self.spec_for(config))
            if image is None:
                continue
            images.setdefault(config.backend, image)
            needs_gpu = needs_gpu or self._docker_runner(image).needs_gpu(config)
        if not images:
            return
        check = docker_preflight(images, needs_gpu, self.docker)
        for image, info in check.images.items():
            self._docker_runner(image).use_image_info(info)
        if check.problems:
            raise PreflightError(check.problems)

    def remove_leftovers(self, study_dir: Path, configs: Iterable[ExperimentConfig]) -> list[str]:
        """Remove containers of this study that an earlier run left (see DockerRunner);
        they are found by the study's label, whatever their image."""
        for config in configs:
            image = image_of(self.spec_for(config))
            if image is not None:
                return self._docker_runner(image).remove_leftovers(study_dir)
        return []
