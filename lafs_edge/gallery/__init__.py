"""The on-device gallery: enrolled people and their embeddings (SQLite), the enrollment quality
gate, and the recognition pipeline (detect, mesh, align, embed, match)."""
from .pipeline import STAGES, Recognized, Recognizer
from .quality import QualityGate, assess
from .files import GalleryBusy
from .store import (EnrollResult, ErasureIncomplete, FingerprintMismatch, Gallery, Match, Person,
                    Shot, person_match)

__all__ = ["EnrollResult", "ErasureIncomplete", "FingerprintMismatch", "Gallery", "GalleryBusy",
           "Match", "Person", "QualityGate", "Recognized", "Recognizer", "STAGES", "Shot", "assess",
           "person_match"]
