SET SESSION sql_mode = TRIM(BOTH ',' FROM REPLACE(CONCAT(',', @@SESSION.sql_mode, ','), ',NO_BACKSLASH_ESCAPES,', ','));
SET GLOBAL server_id = 2;
SET GLOBAL binlog_format = 'ROW';
SET SESSION sql_log_bin = 0;
SET SESSION sql_log_bin = 1;
SET GLOBAL auto_increment_increment = 2;
SET GLOBAL auto_increment_offset = 1;
