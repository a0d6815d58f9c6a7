SELECT @@GLOBAL.innodb_data_home_dir AS data_home, @@GLOBAL.innodb_log_group_home_dir AS log_home, @@GLOBAL.innodb_undo_directory AS undo_dir;
