"""A teacher for the Ray tests (``teacher: tests.ray_fixtures:SlowTeacher``): the simulated teacher, watched.

On frame 0 of a clip it leaves a marker ``$REFINER_TEST_MARKERS/<clip>.<pid>`` (one per attempt, so a test sees
which worker process to kill and that the clip ran again) and, on the clip's first attempt only, sleeps
``$REFINER_TEST_SLEEP`` seconds; on frame 2 of the clip named by ``$REFINER_TEST_FAIL`` it raises. Without these
variables it is the simulated teacher under another name, so its outputs do not depend on them.
"""

import os
import time
from pathlib import Path

from refiner.teachers.base import TeacherBatch, TeacherFrame
from refiner.teachers.simulated import SimulatedTeacher


class SlowTeacher(SimulatedTeacher):
    name = "slow"

    def predict(self, batch: TeacherBatch) -> list[TeacherFrame]:
        frame, markers = int(batch.index[0]), os.environ.get("REFINER_TEST_MARKERS")
        if frame == 0 and markers:
            first = not any(Path(markers).glob(f"{self.clip_name}.*"))
            Path(markers, f"{self.clip_name}.{os.getpid()}").touch()
            if first:
                time.sleep(float(os.environ.get("REFINER_TEST_SLEEP", "0")))
        if frame == 2 and os.environ.get("REFINER_TEST_FAIL") == self.clip_name:
            raise ValueError(f"the slow teacher fails on clip {self.clip_name} on purpose")
        return super().predict(batch)
