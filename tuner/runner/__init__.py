"""Running a study: settings, one worker or several, live progress, stop signals, the summary."""
