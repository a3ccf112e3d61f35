"""Token shards and the jobs over them: the Parquet schema (`schema`) and the one writer
(`writer`), reading token folders and files back (`reader`), the task layer encode,
export and the Ray executor share (`tasks`), encode (`encode`: the driver; `encode_job`:
one process's job; `task_rows`: a task's rows in input order; `ray_executor`, `ray_data`)
and `vqtool decode` (`decode`). LM documents are `vqtool.lm`."""
