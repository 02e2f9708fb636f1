"""run() returns a dict, which is neither a DataFrame nor a list."""


def init():
    pass


def run(mini_batch):
    return {"files": len(mini_batch)}
