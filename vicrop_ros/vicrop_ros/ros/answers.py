"""
Answer and CropBox messages from a job and what became of it: pure functions, no node.

Every question's one Answer is made here: a refusal (status and reason), or the engine's
result with its timings, crop box (source-image pixels) and the header of the frame used.
"""

from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header

from vicrop_interfaces.msg import Answer, CropBox

from .jobs import Job


class Refusal(Exception):  # noqa: N818 (an answer to give, not a failure)
    """An error answer to give: ``status`` is an Answer status value, the message its reason."""

    def __init__(self, status: int, reason: str):
        """Record the status and the reason."""
        super().__init__(reason)
        self.status = status


def blank_answer(job: Job, model: str) -> Answer:
    """Return an Answer carrying the job's identity, nothing decided yet."""
    return Answer(
        id=job.id, question=job.question, model=model, camera=job.source, method=job.method,
        header=Header(),
    )  # fmt: skip


def refusal_answer(job: Job, model: str, refusal: Refusal) -> Answer:
    """Return the error Answer of ``job`` for ``refusal``."""
    answer = blank_answer(job, model)
    answer.status, answer.error = refusal.status, str(refusal)
    return answer


def result_answer(answer: Answer, result) -> Answer:
    """
    Fill ``answer`` (identity, header and image size already set) from a VicropResult: OK.

    ``answer_ms`` includes the image's shared prefix ('prepare'), work the answer needs anyway;
    ``crop`` is the box in source pixels (the whole image when the map chose it), all zero for
    method none.
    """
    answer.status = Answer.OK
    answer.answer = result.answer
    timings = result.timings_ms
    answer.saliency_ms, answer.crop_ms = timings['saliency'], timings['crop']
    answer.answer_ms = timings['prepare'] + timings['answer']
    if result.box is not None:
        box = result.box
        answer.crop = RegionOfInterest(
            x_offset=box.x0, y_offset=box.y0, width=box.width, height=box.height
        )
        answer.crop_score = float(result.score)
    return answer


def crop_box_message(job: Job, answer: Answer) -> CropBox:
    """Return the stamped CropBox of an OK answer with a crop."""
    return CropBox(
        header=answer.header, id=job.id, camera=answer.camera, roi=answer.crop,
        score=answer.crop_score,
    )  # fmt: skip
