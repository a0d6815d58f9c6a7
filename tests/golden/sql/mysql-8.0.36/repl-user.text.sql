SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'repl'@'127.0.0.12' IDENTIFIED BY 'p\'a"s;s \\w rd';
ALTER USER 'repl'@'127.0.0.12' IDENTIFIED BY 'p\'a"s;s \\w rd';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.12';
SET SESSION sql_log_bin = 1;
