"""
The standard VQA accuracy (VQA v2, TextVQA) and the answer normalisation it is computed after.

An answer scores min(matches / 3, 1) against the human answers, averaged over the leave-one-out
subsets: with ten answers, each subset holds nine, so an answer three people gave scores
(7 x 1 + 3 x 2/3) / 10 = 0.9. Answers are compared after the official normalisation: lower
case; punctuation removed (or made a space, when it joins two words); a period kept only
before a digit; number words one to ten written as digits (and none, zero as 0); the articles
a, an, the dropped; a contraction written without its apostrophes restored (dont -> don't).
"""

from collections.abc import Sequence
from functools import cache
from itertools import combinations
import re

# Characters removed, or replaced by a space where they stand between two words.
PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')
ARTICLES = frozenset({'a', 'an', 'the'})
NUMBER_WORDS = {
    'none': '0', 'zero': '0', 'one': '1', 'two': '2', 'three': '3', 'four': '4', 'five': '5',
    'six': '6', 'seven': '7', 'eight': '8', 'nine': '9', 'ten': '10',
}  # fmt: skip
# English contractions as written with their apostrophes; a word written with one or more of
# them left out is read as the contraction.
CONTRACTIONS = (
    "ain't", "aren't", "can't", "could've", "couldn't", "couldn't've", "didn't", "doesn't",
    "don't", "hadn't", "hadn't've", "hasn't", "haven't", "he'd", "he'd've", "he's", "how'd",
    "how'll", "how's", "i'd", "i'd've", "i'm", "i've", "isn't", "it'd", "it'd've", "it'll",
    "let's", "ma'am", "mightn't", "mightn't've", "might've", "mustn't", "must've", "needn't",
    "not've", "o'clock", "oughtn't", "'ow's'at", "shan't", "she'd", "she'd've", "she'll",
    "she's", "should've", "shouldn't", "shouldn't've", "somebody'd", "somebody'd've",
    "somebody'll", "somebody's", "someone'd", "someone'd've", "someone'll", "someone's",
    "something'd", "something'd've", "something'll", "that's", "there'd", "there'd've",
    "there're", "there's", "they'd", "they'd've", "they'll", "they're", "they've", "'twas",
    "wasn't", "we'd", "we'd've", "we'll", "we're", "we've", "weren't", "what'll", "what're",
    "what's", "what've", "when's", "where'd", "where's", "where've", "who'd", "who'd've",
    "who'll", "who's", "who've", "why'll", "why're", "why's", "won't", "would've", "wouldn't",
    "wouldn't've", "y'all", "y'all'll", "y'all'd've", "you'd", "you'd've", "you'll", "you're",
    "you've",
)  # fmt: skip
_COMMA_IN_NUMBER = re.compile(r'\d,\d')
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r'\.(?!\d)')


@cache
def _contraction_spellings() -> dict[str, str]:
    """Return each spelling of a contraction with some of its apostrophes left out -> itself."""
    spellings = {}
    for word in CONTRACTIONS:
        marks = [i for i, c in enumerate(word) if c == "'"]
        for count in range(1, len(marks) + 1):
            for dropped in combinations(marks, count):
                spellings[''.join(c for i, c in enumerate(word) if i not in dropped)] = word
    return spellings


def normalize_answer(text: str) -> str:
    """Return ``text`` as the VQA evaluation compares answers (see the module docstring)."""
    text = original = text.replace('\n', ' ').replace('\t', ' ').strip().lower()
    joined_number = _COMMA_IN_NUMBER.search(original) is not None
    for mark in PUNCTUATION:  # the test reads the answer as given, not as edited so far
        if joined_number or f'{mark} ' in original or f' {mark}' in original:
            text = text.replace(mark, '')
        else:
            text = text.replace(mark, ' ')
    text = _PERIOD_NOT_BEFORE_DIGIT.sub('', text)
    spellings = _contraction_spellings()
    words = []
    for word in text.split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(spellings.get(word, word))
    return ' '.join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """
    Return the VQA accuracy in [0, 1] of ``prediction`` against the human ``answers``.

    min(matches / 3, 1) over each leave-one-out subset of ``answers``, averaged; both sides
    normalised first. One answer (a synthetic set's ground truth) scores 1 when it matches.
    Raises ValueError for no answers.
    """
    if not answers:
        raise ValueError('a question needs at least one human answer')
    guess = normalize_answer(prediction)
    matches = [normalize_answer(answer) == guess for answer in answers]
    if len(matches) == 1:
        return float(matches[0])
    total = sum(matches)
    return sum(min((total - hit) / 3, 1.0) for hit in matches) / len(matches)
