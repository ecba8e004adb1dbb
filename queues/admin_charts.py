"""The queue page's throughput chart: bars of completed and failed jobs per minute."""

from queues.selectors import queue_throughput

CHART_HEIGHT = 40


def throughput_chart(queue: str) -> dict:
    series = queue_throughput(queue)
    peak = max((p["completed"] + p["failed"] for p in series), default=0) or 1
    bars = []
    for i, point in enumerate(series):
        done = round(point["completed"] * CHART_HEIGHT / peak, 1)
        failed = round(point["failed"] * CHART_HEIGHT / peak, 1)
        bars.append(
            {
                "x": i * 4,
                "completed_h": done,
                "completed_y": CHART_HEIGHT - done,
                "failed_h": failed,
                "failed_y": CHART_HEIGHT - done - failed,
                **point,
            }
        )
    return {
        "bars": bars,
        "completed": sum(p["completed"] for p in series),
        "failed": sum(p["failed"] for p in series),
        "height": CHART_HEIGHT,
        "width": len(series) * 4,
    }
