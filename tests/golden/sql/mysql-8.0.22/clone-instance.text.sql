SET SESSION sql_log_bin = 0;
DROP USER IF EXISTS 'repltool_clone'@'10.0.0.2';
CREATE USER 'repltool_clone'@'10.0.0.2' IDENTIFIED BY 'p\'a"s;s \\w rd';
GRANT BACKUP_ADMIN ON *.* TO 'repltool_clone'@'10.0.0.2';
SET SESSION sql_log_bin = 1;
CLONE INSTANCE FROM 'repltool_clone'@'10.0.0.1':3306 IDENTIFIED BY 'p\'a"s;s \\w rd' DATA DIRECTORY = '/var/lib/mysql/.repltool-seed' REQUIRE NO SSL;
CLONE INSTANCE FROM 'repltool_clone'@'10.0.0.1':3306 IDENTIFIED BY 'p\'a"s;s \\w rd' REQUIRE NO SSL;
