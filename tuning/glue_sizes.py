"""How many rows each GLUE task's splits hold, known before any data is loaded."""

# Rows of each task's train and (first) validation split as GLUE released them (the Hub's nyu-mll/glue): for
# estimates and checks made before any data is loaded (a search's held-out slice, a study's time).
SPLIT_ROWS = {
    "cola": (8551, 1043),
    "sst2": (67349, 872),
    "mrpc": (3668, 408),
    "stsb": (5749, 1500),
    "qqp": (363846, 40430),
    "mnli": (392702, 9815),
    "qnli": (104743, 5463),
    "rte": (2490, 277),
    "wnli": (635, 71),
}


def train_rows(task: str) -> int | None:
    """Rows of a task's GLUE train split (what a run without max_train trains on); None for a task not in GLUE."""
    return SPLIT_ROWS.get(task, (None, None))[0]


def validation_rows(task: str) -> int | None:
    """Rows of a task's (first) GLUE validation split."""
    return SPLIT_ROWS.get(task, (None, None))[1]
